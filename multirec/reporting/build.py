"""``build_report``: runs under a folder -> tables, significance tests and figures in one folder.

Layout of the output folder (replaced as a whole on every build, so no stale file from
an earlier report survives)::

    report.md                          everything below in one page (tables, tests, figures, notes)
    report.json                        machine-readable summary: files, tests, checkpoint, notes
    table2-{split}-{protocol}.{md,csv,tex}   one per protocol with results
    table3-{split}-{protocol}.{md,csv,tex}   the ablation, where ablation runs exist
    significance-{split}-{protocol}.json     best multirec model vs its strongest competitor,
                                             paired on per-list NDCG@10 (-recall@20.json,
                                             -ndcg@20.json: those metrics)
    metrics-{split}-{protocol}.png           Table 2's rows, one panel per key metric, std over
                                             seeds as error bars (7 in wide: a paper's text width)
    sampled-vs-full-{split}.png              runs with both protocols' results
    modality-weights.png, predictions.png    from a checkpoint (skipped with a note if none)

Every result found is in a table or named in the notes with the reason it is not.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multirec.errors import ConfigError, DataError, MultirecError
from multirec.eval.candidates import CandidateLists
from multirec.eval.protocols import Protocol
from multirec.io import atomic_dir, atomic_write_bytes, atomic_write_json
from multirec.pipeline import checkpoints
from multirec.reporting import formats, inspect, plots
from multirec.reporting import tables as T
from multirec.reporting.runs import Entry, collect
from multirec.reporting.significance import PairedTest, paired_test
from multirec.tracking import describe

log = logging.getLogger(__name__)

# (metric, file suffix) of the paired tests; NDCG@10 keeps the unsuffixed names
TESTED = (("ndcg@10", ""), ("recall@20", "-recall@20"), ("ndcg@20", "-ndcg@20"))


@dataclass
class CheckpointFigures:
    """Where the checkpoint figures come from (``ckpt_path`` or the best model run)."""

    protocol: Protocol  # candidate lists the checkpoint is scored on (a sampled protocol)
    ckpt_path: Path | None = None  # null: the best model run's best checkpoint
    device: str = "cpu"
    examples: int = 4  # covers per row of the prediction figure
    max_lists: int | None = 2000  # lists scored (a seeded subsample keeps it fast on big data)


@dataclass
class Report:
    out: Path
    files: list[str] = field(default_factory=list)
    tests: dict[str, dict | str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checkpoint: str | None = None


def select_dataset(entries: list[Entry], wanted: str | None, prepared_dir: Path) -> str:
    """The one prepared dataset the report is about; several without ``dataset=`` is an error.

    Results on different prepared datasets are not comparable (other users, items or
    candidates), so they are never put into one table.
    """
    counts = Counter(e.dataset for e in entries)
    if wanted:
        hits = [fp for fp in counts if fp.startswith(str(wanted))]
        if len(hits) != 1:
            found = "no" if not hits else "several"
            raise ConfigError(
                f"dataset={wanted} matches {found} prepared dataset(s) of the runs; "
                f"choose one of: {_describe(counts, prepared_dir)}"
            )
        return hits[0]
    if len(counts) > 1:
        raise ConfigError(
            f"the runs were evaluated on {len(counts)} different prepared datasets and cannot share a table: "
            f"{_describe(counts, prepared_dir)}; pass dataset=<fingerprint prefix> or a narrower runs= folder"
        )
    return next(iter(counts))


def _dataset_name(fp: str, prepared_dir: Path) -> str:
    try:
        return (
            f"{checkpoints.find_prepared(prepared_dir, fp).manifest.get('name', '?')} ({fp[:12]})"
        )
    except DataError:
        return f"prepared dataset {fp[:12]}"


def _describe(counts: Counter, prepared_dir: Path) -> str:
    return ", ".join(
        f"{_dataset_name(fp, prepared_dir)}: {n} results" for fp, n in counts.most_common()
    )


def build_report(
    runs: Path | str,
    out: Path | str,
    *,
    prepared_dir: Path | str,
    cache_dir: Path | str,
    split: str = "test",
    dataset: str | None = None,
    figures: CheckpointFigures | None = None,
) -> Report:
    """Collect the runs under ``runs`` and write the report into ``out`` (see the module docstring)."""
    runs, out, prepared_dir = Path(runs), Path(out), Path(prepared_dir)
    if not runs.is_dir():
        raise ConfigError(
            f"runs={runs} is not a directory; point it at the folder holding your runs (e.g. outputs)"
        )
    collection = collect(runs)
    if not collection.entries:
        raise MultirecError(
            f"no finished run under {runs} (no metrics.json of multirec.train or multirec.evaluate); "
            "run `make sweep` and `make baselines` first"
        )
    fp = select_dataset(collection.entries, dataset, prepared_dir)
    entries = [e for e in collection.entries if e.dataset == fp]
    name = _dataset_name(fp, prepared_dir)
    protocols = T.protocols_of(entries, split)
    if not protocols:
        raise MultirecError(
            f"no run under {runs} has {split} results; evaluate on split={split} or pick another split"
        )
    report = Report(out, notes=list(collection.notes) + _left_out(collection.entries, fp, split))
    page = [
        f"# Results on {name}",
        "",
        f"{len(entries)} results (configuration x seed) collected from `{runs}`; split `{split}`.",
        "",
    ]
    with atomic_dir(out) as tmp:
        tuned: dict[str, dict] = {}
        for protocol in protocols:
            rows = T.aggregate(entries, split, protocol)
            page += _tables(tmp, report, rows, split, protocol, name)
            for r in rows:
                if r.tuning:
                    tuned.setdefault(r.label, r.tuning)
        page += _sampled_vs_full(tmp, report, entries, split)
        if figures is not None:
            page += _checkpoint_figures(
                tmp, report, entries, split, prepared_dir, cache_dir, figures
            )
        page += _tuning_section(tuned)
        if report.notes:
            page += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
        _write(tmp, report, "report.md", "\n".join(page))
        report.files.append("report.json")
        atomic_write_json(
            tmp / "report.json",
            {
                "dataset": fp,
                "dataset_name": name,
                "runs": str(runs),
                "split": split,
                "files": sorted(report.files),
                "significance": report.tests,
                "tuning": tuned,
                "checkpoint": report.checkpoint,
                "notes": report.notes,
            },
        )
    return report


def _left_out(entries: list[Entry], fp: str, split: str) -> list[str]:
    """Why the results that no table holds are left out, one note per reason."""
    notes = []
    others = [e for e in entries if e.dataset != fp]
    if others:
        notes.append(
            f"left out: {_count_labels(others)}, evaluated on other prepared datasets "
            f"than {fp[:12]} (dataset= chooses which one the report is about)"
        )
    silent = [
        e
        for e in entries
        if e.dataset == fp and not any(k.startswith(f"{split}/") for k in e.metrics)
    ]
    if silent:
        notes.append(
            f"left out: {_count_labels(silent)}, with no {split} results "
            "(tuning trials and runs with test=false score validation only)"
        )
    return notes


def _count_labels(entries: list[Entry]) -> str:
    counts = Counter(e.label for e in entries)
    return ", ".join(
        f"{label} ({n} result{'s' if n > 1 else ''})" for label, n in sorted(counts.items())
    )


def _write(folder: Path, report: Report, name: str, text: str) -> None:
    atomic_write_bytes(folder / name, text.encode())
    report.files.append(name)


def _png(folder: Path, report: Report, name: str, fig) -> str:
    plots.save_png(fig, folder / name)
    report.files.append(name)
    return f"![{name}]({name})"


def _tables(
    folder: Path, report: Report, rows: list[T.Row], split: str, protocol: str, name: str
) -> list[str]:
    page = [f"## Protocol: {protocol}", ""]
    t2 = T.table2(rows, split, protocol, name)
    if t2 is not None:
        sentences = []
        for metric, suffix in TESTED:
            test = _significance(t2, split, protocol, metric)
            key = f"{split}/{protocol}" + (f"/{metric}" if suffix else "")
            report.tests[key] = test.to_dict() if isinstance(test, PairedTest) else test
            sentences.append(
                test.sentence()
                if isinstance(test, PairedTest)
                else f"No significance test on {metric}: {test}."
            )
            if isinstance(test, PairedTest):
                file = f"significance-{split}-{protocol}{suffix}.json"
                atomic_write_json(folder / file, test.to_dict())
                report.files.append(file)
        page += _table_files(folder, report, t2, sentences)
        page += [
            _png(folder, report, f"metrics-{split}-{protocol}.png", plots.metrics_figure(t2)),
            "",
        ]
    t3 = T.table3(rows, split, protocol, name)
    if t3 is not None:
        page += _table_files(folder, report, t3, [])
    return page


def _table_files(folder: Path, report: Report, table: T.Table, extra: list[str]) -> list[str]:
    md = formats.to_markdown(table, extra)
    _write(folder, report, f"{table.name}.md", md)
    _write(folder, report, f"{table.name}.csv", formats.to_csv(table))
    _write(folder, report, f"{table.name}.tex", formats.to_latex(table))
    return [md]


def _significance(table: T.Table, split: str, protocol: str, metric: str) -> PairedTest | str:
    """The best multirec model against its strongest competitor (the best baseline or field
    model), both by mean ``metric``, paired on per-list ``metric``; without a multirec model,
    the best field model against the strongest baseline."""

    def best(rows: list[T.Row]) -> T.Row | None:
        return max(rows, key=lambda r: r.mean(metric), default=None)

    ours = [r for r in table.rows if r.kind == "model" and not r.field_model]
    field = [r for r in table.rows if r.field_model]
    baselines = [r for r in table.rows if r.kind == "baseline"]
    model, rival = (best(ours), best(field + baselines)) if ours else (best(field), best(baselines))
    if model is None or rival is None:
        return "the table needs a model and a competitor (a baseline or a field model)"
    return paired_test(model, rival, split, protocol, metric)


def _tuning_section(tuned: dict[str, dict]) -> list[str]:
    """What multirec.tune chose for each tuned row, with the budget it had."""
    if not tuned:
        return []
    lines = [
        "## Tuning",
        "",
        f"Rows marked {T.TUNED}: settings chosen by `multirec.tune` on the validation split only.",
        "",
        "| Row | Trials | Selected on | Chosen settings | Best validation value |",
        "|---|---:|---|---|---:|",
    ]
    for label, t in tuned.items():
        chosen = ", ".join(
            f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
            for k, v in t["best_params"].items()
        )
        lines.append(
            f"| {label} | {t['trials']} | {t['metric']} | {chosen} | {t['best_value']:.4f} |"
        )
    return [*lines, ""]


def _sampled_vs_full(folder: Path, report: Report, entries: list[Entry], split: str) -> list[str]:
    fig = plots.sampled_vs_full_figure(T.aggregate(entries, split, "sampled"), split)
    if fig is None:
        report.notes.append(
            f"no sampled-vs-full figure: no run has both {split}/sampled and {split}/full results "
            "(evaluate a checkpoint with `python -m multirec.evaluate ckpt_path=... protocol=full`)"
        )
        return []
    return [
        "## Sampled vs full ranking",
        "",
        _png(folder, report, f"sampled-vs-full-{split}.png", fig),
        "",
    ]


def best_checkpoint(entries: list[Entry], split: str, protocol: str) -> Path | None:
    """Best multirec model configuration by mean ``split`` NDCG@10; among its seeds, the best
    on validation."""
    rows = [
        r
        for r in T.aggregate(entries, split, protocol)
        if r.kind == "model"
        and not r.field_model  # the figures look into multirec's fusion
        and any(e.checkpoint is not None and e.checkpoint.is_file() for e in r.entries)
    ]
    if not rows:
        return None
    row = max(rows, key=lambda r: r.mean(T.KEY_METRIC))
    ok = [e for e in row.entries if e.checkpoint is not None and e.checkpoint.is_file()]
    metric = f"valid/{protocol}/{T.KEY_METRIC}"
    return max(ok, key=lambda e: e.metrics.get(metric, float("-inf"))).checkpoint


def _model_label(model: Any, entries: list[Entry], ckpt: Path) -> str:
    """The checkpoint's model as its row is labelled (with the seed), else as it was composed."""
    for protocol in ("sampled", "full", "cold_items"):
        for row in T.aggregate(entries, "test", protocol) + T.aggregate(entries, "valid", protocol):
            for e in row.entries:
                if e.checkpoint is not None and e.checkpoint.resolve() == ckpt.resolve():
                    return f"{row.label}, seed {e.seed}"
    choices = (model.hparams.get("provenance") or {}).get("choices") or {}
    return " ".join(describe(choices)) or model.name


def _checkpoint_figures(
    folder: Path,
    report: Report,
    entries: list[Entry],
    split: str,
    prepared_dir: Path,
    cache_dir: Path | str,
    cfg: CheckpointFigures,
) -> list[str]:
    ckpt = (
        Path(cfg.ckpt_path) if cfg.ckpt_path else best_checkpoint(entries, split, cfg.protocol.name)
    )
    if ckpt is None:
        report.notes.append(
            "no modality-weight or prediction figure: no model run with a checkpoint on disk"
        )
        return []
    try:
        model, ds = checkpoints.load_model(ckpt, prepared_dir, cache_dir, cfg.device)
    except MultirecError as exc:
        if cfg.ckpt_path:  # asked for explicitly: the user must hear why it cannot be used
            raise
        report.notes.append(
            f"no modality-weight or prediction figure: the best run's checkpoint cannot be loaded ({exc})"
        )
        return []
    report.checkpoint = str(ckpt)
    lists = cfg.protocol.lists(ds, split)
    if not isinstance(lists, CandidateLists):
        raise ConfigError(
            f"protocol={cfg.protocol.name} has no candidate lists; the figures need protocol=sampled or cold_items"
        )
    lists = inspect.subsample(lists, cfg.max_lists)
    page = [
        "## A trained model up close",
        "",
        f"Checkpoint `{ckpt}`, {len(lists)} {split} lists of the {cfg.protocol.name} protocol.",
        "",
    ]
    weights = inspect.modality_weights(model, ds, lists)
    if weights is None:
        report.notes.append(
            f"no modality-weight figure: the fusion of {ckpt} (concatenation) has no weights"
        )
        pairs = inspect.candidate_scores(model, ds, lists)
    else:
        fig = plots.modality_weights_figure(
            weights,
            model.modalities,
            f"What the fusion of {_model_label(model, entries, ckpt)} weighs",
        )
        page += [_png(folder, report, "modality-weights.png", fig), ""]
        pairs = weights
    examples = inspect.prediction_examples(pairs, ds, cfg.examples)
    page += [_png(folder, report, "predictions.png", plots.predictions_figure(examples)), ""]
    return page
