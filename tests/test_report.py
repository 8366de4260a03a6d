"""multirec.report: run collection, the paper's table layouts, significance, figures.

Most tests build run directories by hand in the formats ``multirec.train`` and
``multirec.evaluate`` write (so every number in a table is known in advance); the last
ones report on a tiny model really trained, and on baselines really evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from multirec.errors import ConfigError, DataError, MultirecError
from multirec.pipeline import checkpoints
from multirec.reporting import tables as T
from multirec.reporting.build import build_report
from multirec.reporting.runs import collect
from multirec.reporting.significance import paired_test
from tests.conftest import compose_cfg
from tests.test_tracking import read_run

FP = "a" * 64
N_LISTS = 60
METRICS = [m for _, m in T.COLUMNS]


def _lists(protocol: str, values: np.ndarray, shift: int = 0) -> pl.DataFrame:
    """Per-list results keyed like the evaluator's: (user, positive) for sampled, user for full."""
    metrics = {"ndcg@10": values, "recall@20": values + 0.1, "ndcg@20": values + 0.05}
    if protocol == "full":
        return pl.DataFrame({"user_id": [f"u{i + shift}" for i in range(len(values))], **metrics})
    return pl.DataFrame(
        {
            "user_id": [f"u{i // 2 + shift}" for i in range(len(values))],
            "item_id": [f"i{i}" for i in range(len(values))],
            **metrics,
        }
    )


def _metrics(split: str, protocol: str, level: float, n_lists: int = N_LISTS) -> dict[str, float]:
    out = {f"{split}/{protocol}/{m}": level + 0.01 * j for j, m in enumerate(METRICS)}
    out[f"{split}/{protocol}/n_lists"] = n_lists
    return out


def model_run(
    root: Path,
    name: str,
    encoder: str,
    seed: int,
    level: float,
    *,
    fusion: str = "attention",
    dataset: str = FP,
    protocols: tuple[str, ...] = ("sampled",),
    lists: np.ndarray | None = None,
    checkpoint: Path | None = None,
    nested: bool = False,
    composed: dict | None = None,
    model: tuple[str, str] = ("multimodal", "MultimodalRecommender"),
    tuning: dict | None = None,
) -> Path:
    """A training run as multirec.train writes it: flat metrics.json + evaluation.json with the
    run record (``nested``: the record itself in metrics.json, metrics nested); ``model`` is
    the (choice, name) of the model, ``tuning`` what multirec.tune wrote beside the run."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    metrics: dict[str, float] = {}
    for p in protocols:
        metrics |= _metrics("test", p, level) | _metrics("valid", p, level + 0.001 * seed)
        values = lists if lists is not None else np.full(N_LISTS, level)
        _lists(p, values).write_parquet(d / f"lists-test-{p}.parquet")
    visual, _, text = encoder.partition("_")
    record = {
        "kind": "model",
        "model": model[1],
        "seed": seed,
        "task_name": "paper_encoders",
        "dataset": {"fingerprint": dataset, "root": "/nowhere"},
        "metrics": metrics,
        "choices": {
            "encoder": encoder,
            "encoder/visual": visual,
            "encoder/text": text,
            "fusion": fusion,
            "loss": "bce",
            "model": model[0],
            "data": "sample",
            "logger": "csv",
            "experiment": "paper_encoders",
        },
        "best_checkpoint": str(checkpoint or d / "checkpoints" / "best.ckpt"),
        "run_dir": str(d),
        "modalities": ["user", "item", "visual", "text"],
    }
    if nested:
        (d / "metrics.json").write_text(json.dumps(record))
    else:
        (d / "metrics.json").write_text(json.dumps(metrics))
        (d / "evaluation.json").write_text(
            json.dumps(record | {"lists": [f"lists-test-{p}.parquet" for p in protocols]})
        )
    (d / ".hydra" / "overrides.yaml").write_text(
        f"- encoder={encoder}\n- seed={seed}\n- trainer.max_epochs=3\n"
    )
    if composed is not None:
        (d / ".hydra" / "config.yaml").write_text(json.dumps(composed))  # JSON is YAML
    if tuning is not None:
        (d / "tuning.json").write_text(json.dumps(tuning))
    return d


def baseline_run(
    root: Path,
    name: str,
    model: str,
    protocol: str,
    level: float,
    *,
    seed: int = 0,
    dataset: str = FP,
    lists: np.ndarray | None = None,
    k: int = 100,
    tuning: dict | None = None,
) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if tuning is not None:
        (d / "tuning.json").write_text(json.dumps(tuning))
    metrics = _metrics("test", protocol, level)
    _lists(protocol, lists if lists is not None else np.full(N_LISTS, level)).write_parquet(
        d / f"lists-test-{protocol}.parquet"
    )
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "evaluation.json").write_text(
        json.dumps(
            {
                "model": model,
                "metrics": metrics,
                "split": "test",
                "lists": [f"lists-test-{protocol}.parquet"],
                "source": {"baseline": {"_target_": f"x.{model}", "seed": seed, "k": k}},
                "protocol": {
                    "_target_": "multirec.eval.protocols.SampledProtocol",
                    "num_negatives": 20,
                },
                "dataset": {"fingerprint": dataset, "root": "/nowhere"},
            }
        )
    )
    return d


@pytest.fixture
def paper_runs(tmp_path) -> Path:
    """Two baselines (both protocols), two encoder pairs x 3 seeds, and an ablation of one pair."""
    root = tmp_path / "outputs"
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.3, N_LISTS)
    for p in ("sampled", "full"):
        baseline_run(
            root,
            f"multirun/evaluate/t/0_baseline=random,eval={p}",
            "Random",
            p,
            0.20,
            lists=base - 0.05,
        )
        baseline_run(
            root,
            f"multirun/evaluate/t/1_baseline=mostpop,eval={p}",
            "MostPopular",
            p,
            0.30,
            lists=base,
        )
    for j, (enc, level) in enumerate((("clip_sbert", 0.42), ("dino_sbert", 0.40))):
        for seed in (1, 2, 3):
            model_run(
                root,
                f"multirun/paper_encoders/t/{j}{seed}_encoder={enc},seed={seed}",
                enc,
                seed,
                level + 0.01 * seed,
                lists=base + 0.1 + 0.01 * seed + rng.normal(0, 0.01, N_LISTS),
            )
    for enc, level in (("none_sbert", 0.41), ("dino_none", 0.32)):
        model_run(root, f"multirun/ablation/t/{enc}", enc, 1, level)
    return root


def test_table2_layout_mean_std_and_bold(paper_runs, tmp_path):
    out = tmp_path / "report"
    report = build_report(paper_runs, out, prepared_dir=tmp_path / "none", cache_dir=tmp_path / "c")
    md = (out / "table2-test-sampled.md").read_text()
    lines = md.splitlines()
    assert (
        "Protocol: sampled (the paper's)" in lines[0]
        and "20 sampled never-interacted items" in lines[0]
    )
    assert f"{N_LISTS} lists" in lines[0]
    body = [ln for ln in lines if ln.startswith("| ")][1:]
    labels = [ln.split("|")[1].strip() for ln in body]
    assert labels == [
        "*Baselines*",
        "Random",
        "MostPopular",
        "*Multimodal models*",
        "CLIP+SBERT",
        "DINO+SBERT",
    ]
    # mean +- sample std over the three seeds, bold for the best mean in every column
    clip = body[4].split("|")
    ndcg10 = 0.42 + 0.01 * np.array([1, 2, 3]) + 0.01 * METRICS.index("ndcg@10")
    assert clip[4 + 1].strip() == f"**{ndcg10.mean():.4f} \u00b1 {ndcg10.std(ddof=1):.4f}**"
    assert clip[-2].strip() == "3"
    assert "**" not in body[1] and "\u00b1" not in body[1]  # Random: one seed, never best
    # CSV and LaTeX carry the same numbers
    rows = list(csv.DictReader(io.StringIO((out / "table2-test-sampled.csv").read_text())))
    clip_csv = next(r for r in rows if r["method"] == "CLIP+SBERT")
    assert float(clip_csv["ndcg@10_mean"]) == pytest.approx(ndcg10.mean())
    assert float(clip_csv["ndcg@10_std"]) == pytest.approx(ndcg10.std(ddof=1))
    assert clip_csv["seeds"] == "1 2 3" and clip_csv["protocol"] == "sampled"
    tex = (out / "table2-test-sampled.tex").read_text()
    assert (
        r"\toprule" in tex
        and rf"\textbf{{{ndcg10.mean():.4f} $\pm$ {ndcg10.std(ddof=1):.4f}}}" in tex
    )
    assert r"\textit{Baselines}" in tex
    # one table per protocol, the protocol named in each
    full = (out / "table2-test-full.md").read_text()
    assert "Protocol: full ranking" in full and "CLIP+SBERT" not in full
    assert {
        "report.md",
        "report.json",
        "metrics-test-sampled.png",
        "sampled-vs-full-test.png",
    } <= set(report.files)
    assert (out / "metrics-test-sampled.png").read_bytes()[:4] == b"\x89PNG"


def test_table3_ablation_rows(paper_runs, tmp_path):
    out = tmp_path / "report"
    build_report(paper_runs, out, prepared_dir=tmp_path / "none", cache_dir=tmp_path / "c")
    md = (out / "table3-test-sampled.md").read_text()
    labels = [ln.split("|")[1].strip() for ln in md.splitlines() if ln.startswith("| ")][1:]
    assert labels == [
        "DINO+SBERT (Full)",
        "w/o visual (Text-only: SBERT)",
        "w/o text (Visual-only: DINO)",
    ]
    assert "Ablation" in md.splitlines()[0] and "20 sampled never-interacted" in md.splitlines()[0]
    # single-modality runs are not multimodal rows of Table 2
    assert "text-only" not in (out / "table2-test-sampled.md").read_text().split("- ")[0]


def test_significance_best_model_vs_strongest_baseline(paper_runs, tmp_path):
    out = tmp_path / "report"
    report = build_report(paper_runs, out, prepared_dir=tmp_path / "none", cache_dir=tmp_path / "c")
    test = json.loads((out / "significance-test-sampled.json").read_text())
    assert (test["a"], test["b"]) == ("CLIP+SBERT", "MostPopular")
    assert test["n_lists"] == N_LISTS and test["diff"] == pytest.approx(0.12, abs=0.01)
    assert test["t_pvalue"] < 1e-6 and test["wilcoxon_pvalue"] < 1e-6
    assert test["ci_low"] < test["diff"] < test["ci_high"]
    assert "Wilcoxon signed-rank p" in (out / "table2-test-sampled.md").read_text()
    assert isinstance(report.tests["test/full"], str)  # no model under the full protocol


TUNING = {
    "name": "lightgcn",
    "group": "model",
    "trials": 20,
    "sampler": "TPESampler",
    "sampler_seed": 0,
    "metric": "valid/full/ndcg@10",
    "seeds": [1, 2, 3],
    "space": {"model.lr": "tag(log, interval(0.0001, 0.01))", "model.dim": "choice(32, 64)"},
    "best_params": {"model.lr": 0.0042, "model.dim": 64},
    "best_value": 0.1234,
}


def test_every_kind_of_model_tuned_marks_and_the_strongest_competitor(tmp_path):
    """Baselines, the field's models (by name) and multirec's (by encoder pair) in one table
    at K = 10 and 20; tuned rows marked with their budget stated; multirec's best model tested
    against the strongest of all the others, a field model here, at both K."""
    root = tmp_path / "runs"
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.3, N_LISTS)
    knn = TUNING | {"name": "itemknn", "group": "baseline", "best_params": {"baseline.k": 57}}
    for p in ("sampled", "full"):
        baseline_run(root, f"pop-{p}", "MostPopular", p, 0.30, lists=base)
        baseline_run(root, f"knn-{p}", "ItemKNN", p, 0.35, lists=base + 0.02, k=57, tuning=knn)
    for seed in (1, 2, 3):
        for name, level, model, tuning in (
            ("lightgcn", 0.40, ("lightgcn", "LightGCN"), TUNING),
            ("ours", 0.42, ("multimodal", "MultimodalRecommender"), None),
        ):
            model_run(
                root,
                f"{name}-{seed}",
                "effnet_sbert",
                seed,
                level + 0.01 * seed,
                protocols=("sampled", "full"),
                lists=base + level - 0.3 + rng.normal(0, 0.01, N_LISTS),
                model=model,
                tuning=tuning,
            )
    model_run(root, "vbpr", "effnet_sbert", 1, 0.2, model=("vbpr", "VBPR"))  # sampled only
    out = tmp_path / "report"
    report = build_report(root, out, prepared_dir=tmp_path / "none", cache_dir=tmp_path / "c")

    md = (out / "table2-test-full.md").read_text()
    labels = [ln.split("|")[1].strip() for ln in md.splitlines() if ln.startswith("| ")][1:]
    assert labels == [
        "*Baselines*",
        "MostPopular",
        "ItemKNN\u2021",
        "*Field models*",
        "LightGCN\u2021",
        "*Multimodal models*",
        "EffNet+SBERT",
    ]
    assert "| R@10 | NDCG@10 | R@20 | NDCG@20 |" in md
    assert (
        "\u2021 tuned by multirec.tune: 20 trials of Optuna's TPESampler (seed 0) over the space "
        "its config declares, chosen on NDCG@10 of the valid split under the full protocol; "
        "the chosen settings were tested once per seed"
    ) in md
    assert "rows without \u2021 ran with their configured settings" in md
    assert "VBPR" in (out / "table2-test-sampled.md").read_text()
    assert not (out / "table3-test-full.md").exists()  # field models are no ablation
    for suffix, metric in (("", "ndcg@10"), ("-recall@20", "recall@20"), ("-ndcg@20", "ndcg@20")):
        test = json.loads((out / f"significance-test-full{suffix}.json").read_text())
        assert (test["a"], test["b"], test["metric"]) == ("EffNet+SBERT", "LightGCN", metric)
        assert test["n_lists"] == N_LISTS and test["diff"] > 0
    assert report.tests["test/full/ndcg@20"]["b"] == "LightGCN"
    rows = list(csv.DictReader(io.StringIO((out / "table2-test-full.csv").read_text())))
    assert {r["method"]: r["tuned"] for r in rows} == {
        "MostPopular": "false",
        "ItemKNN\u2021": "true",
        "LightGCN\u2021": "true",
        "EffNet+SBERT": "false",
    }
    assert r"LightGCN$^\ddagger$" in (out / "table2-test-full.tex").read_text()
    page = (out / "report.md").read_text()
    assert "## Tuning" in page and "| LightGCN | 20 | valid/full/ndcg@10 |" in page
    assert "`model.lr=0.0042`, `model.dim=64`" in page and "`baseline.k=57`" in page
    summary = json.loads((out / "report.json").read_text())
    assert summary["tuning"]["LightGCN"]["best_value"] == 0.1234


def test_paired_test_refuses_different_lists_and_accepts_equal_models(tmp_path):
    root = tmp_path / "runs"
    values = np.linspace(0, 1, N_LISTS)
    baseline_run(root, "a", "MostPopular", "sampled", 0.3, lists=values)
    baseline_run(root, "b", "ItemKNN", "sampled", 0.3, lists=values)
    d = baseline_run(root, "c", "UserKNN", "sampled", 0.3)
    _lists("sampled", values, shift=1).write_parquet(d / "lists-test-sampled.parquet")
    rows = {r.label: r for r in T.aggregate(collect(root).entries, "test", "sampled")}
    same = paired_test(rows["MostPopular"], rows["ItemKNN"], "test", "sampled")
    assert same.diff == 0 and same.t_pvalue == 1.0 and same.wilcoxon_pvalue == 1.0
    reason = paired_test(rows["MostPopular"], rows["UserKNN"], "test", "sampled")
    assert isinstance(reason, str) and "not scored on the same lists" in reason


def test_mixed_datasets_are_refused_unless_one_is_chosen(paper_runs, tmp_path):
    baseline_run(paper_runs, "elsewhere/0", "MostPopular", "sampled", 0.9, dataset="b" * 64)
    with pytest.raises(
        ConfigError, match=r"2 different prepared datasets.*aaaaaaaaaaaa.*bbbbbbbbbbbb"
    ):
        build_report(
            paper_runs, tmp_path / "r", prepared_dir=tmp_path / "none", cache_dir=tmp_path / "c"
        )
    build_report(
        paper_runs,
        tmp_path / "r",
        prepared_dir=tmp_path / "none",
        cache_dir=tmp_path / "c",
        dataset="bbbb",
    )
    md = (tmp_path / "r" / "table2-test-sampled.md").read_text()
    assert "0.9" in md and "CLIP" not in md
    with pytest.raises(ConfigError, match="dataset=cccc matches no"):
        build_report(
            paper_runs,
            tmp_path / "r",
            prepared_dir=tmp_path / "none",
            cache_dir=tmp_path / "c",
            dataset="cccc",
        )


def test_rerun_of_a_seed_replaces_the_older_one_and_checkpoint_evaluations_attach(tmp_path):
    root = tmp_path / "runs"
    old = model_run(root, "old", "clip_sbert", 1, 0.10, nested=True)
    new = model_run(root, "new", "clip_sbert", 1, 0.30)
    import os

    os.utime(old / "metrics.json", (1, 1))
    ckpt = new / "checkpoints" / "best.ckpt"
    d = baseline_run(root, "eval-full", "MultimodalRecommender", "full", 0.05)
    ev = json.loads((d / "evaluation.json").read_text())
    ev["source"] = {"ckpt_path": str(ckpt)}
    (d / "evaluation.json").write_text(json.dumps(ev))
    coll = collect(root)
    assert len(coll.entries) == 1
    entry = coll.entries[0]
    assert entry.metrics["test/sampled/ndcg@10"] == pytest.approx(
        0.30 + 0.01 * METRICS.index("ndcg@10")
    )
    assert entry.metrics["test/full/ndcg@10"] == pytest.approx(
        0.05 + 0.01 * METRICS.index("ndcg@10")
    )
    assert entry.lists[("test", "full")] == d / "lists-test-full.parquet"
    assert entry.config["trainer.max_epochs"] == "3" and "seed" not in entry.config
    assert any("replaces older results" in n and str(old) in n for n in coll.notes)


def test_rows_differing_in_other_settings_are_told_apart(tmp_path):
    root = tmp_path / "runs"
    model_run(root, "a", "clip_sbert", 1, 0.3, fusion="attention")
    model_run(root, "b", "clip_sbert", 1, 0.2, fusion="gated")
    labels = sorted(r.label for r in T.aggregate(collect(root).entries, "test", "sampled"))
    assert labels == ["CLIP+SBERT (fusion=attention)", "CLIP+SBERT (fusion=gated)"]


def test_variant_runs_get_distinct_labels_naming_what_departs(tmp_path):
    """Runs as `make fusion` plus variant runs leave them: the paper's architecture, content
    negatives, cls pooling, ids off; each row names the settings where it departs."""
    root = tmp_path / "runs"

    def composed(fusion: str, **changes: object) -> dict:
        config: dict = {
            "model": {"use_ids": True, "user_profile": True, "match": True},
            "datamodule": {"negatives": "uniform"},
            "fusion": {"_target_": f"multirec.models.fusion.{fusion.capitalize()}Fusion"},
        }
        if fusion == "attention":
            config["fusion"]["pooling"] = "mean"
        for key, value in changes.items():
            group, name = key.split("__")
            config[group][name] = value
        return config

    variants = {
        "concat": ("concat", {}),
        "gated": ("gated", {}),
        "attention": ("attention", {}),
        "ids": ("attention", {"model__use_ids": False}),
        "paper": ("attention", {"model__user_profile": False, "model__match": False}),
        "content": ("attention", {"datamodule__negatives": "content"}),
        "cls": ("attention", {"fusion__pooling": "cls"}),
    }
    for name, (fusion, changes) in variants.items():
        model_run(
            root, name, "effnet_sbert", 1, 0.3, fusion=fusion, composed=composed(fusion, **changes)
        )
    labels = sorted(r.label for r in T.aggregate(collect(root).entries, "test", "sampled"))
    assert labels == [
        "EffNet+SBERT (fusion=attention)",
        "EffNet+SBERT (fusion=attention, datamodule.negatives=content)",
        "EffNet+SBERT (fusion=attention, fusion.pooling=cls)",
        "EffNet+SBERT (fusion=attention, model.match=false, model.user_profile=false)",
        "EffNet+SBERT (fusion=attention, model.use_ids=false)",
        "EffNet+SBERT (fusion=concat)",
        "EffNet+SBERT (fusion=gated)",
    ]


def test_every_result_is_in_a_table_or_named_in_the_notes(tmp_path):
    root = tmp_path / "outputs"
    baseline_run(root, "mostpop", "MostPopular", "sampled", 0.3)
    model_run(root, "full", "effnet_sbert", 1, 0.4)
    model_run(root, "visual", "effnet_none", 1, 0.35, fusion="gated")  # no full pair to ablate
    trial = model_run(root, "trial", "clip_sbert", 1, 0.2)  # a tuning trial: validation only
    record = json.loads((trial / "evaluation.json").read_text())
    record["metrics"] = {k: v for k, v in record["metrics"].items() if k.startswith("valid/")}
    (trial / "evaluation.json").write_text(json.dumps(record))
    (trial / "metrics.json").write_text(json.dumps(record["metrics"]))
    report = build_report(root, tmp_path / "r", prepared_dir=tmp_path, cache_dir=tmp_path)
    md = (tmp_path / "r" / "table2-test-sampled.md").read_text()
    assert "| *Single-modality models* |" in md and "| EffNet (visual-only) |" in md
    assert "not in Table 3" in md
    assert not (tmp_path / "r" / "table3-test-sampled.md").exists()
    assert any("CLIP+SBERT (1 result), with no test results" in n for n in report.notes)


def test_settings_an_experiment_file_sets_separate_rows_infrastructure_does_not(tmp_path):
    root = tmp_path / "runs"

    def composed(dim: int, out: str, devices: int) -> dict:
        return {
            "model": {"dim": dim, "lr": 0.003},
            "paths": {"output_dir": out},
            "seed": 1,
            "trainer": {"max_epochs": 20, "devices": devices},
            "data": {"root": out},
            "protocols": {"sampled": {"num_negatives": 50}},
        }

    model_run(root, "a", "clip_sbert", 1, 0.30, composed=composed(64, "/a", 1))
    model_run(root, "b", "clip_sbert", 2, 0.32, composed=composed(64, "/b", 2))
    model_run(root, "c", "clip_sbert", 1, 0.20, composed=composed(128, "/c", 1))
    rows = {r.label: r for r in T.aggregate(collect(root).entries, "test", "sampled")}
    assert sorted(rows) == ["CLIP+SBERT (model.dim=128)", "CLIP+SBERT (model.dim=64)"]
    assert rows["CLIP+SBERT (model.dim=64)"].seeds == [1, 2]
    # the protocol a training run recorded is the one its table names
    assert (
        "against 50 sampled never-interacted items"
        in T.table2(list(rows.values()), "test", "sampled", "x").caption
    )


def test_checkpoint_figures_are_skipped_with_a_note_unless_asked_for(paper_runs, tmp_path):
    from multirec.eval.protocols import SampledProtocol
    from multirec.reporting.build import CheckpointFigures

    for metrics in paper_runs.glob("multirun/paper_encoders/*/*/metrics.json"):
        (metrics.parent / "checkpoints").mkdir()
        (metrics.parent / "checkpoints" / "best.ckpt").write_text("not a checkpoint")
    report = build_report(
        paper_runs,
        tmp_path / "r",
        prepared_dir=tmp_path,
        cache_dir=tmp_path,
        figures=CheckpointFigures(protocol=SampledProtocol()),
    )
    assert any("checkpoint cannot be loaded" in n and "clip_sbert,seed=" in n for n in report.notes)
    assert (
        "predictions.png" not in report.files
        and "cannot be loaded" in (tmp_path / "r" / "report.md").read_text()
    )
    bad = next(paper_runs.glob("multirun/paper_encoders/*/*/checkpoints/best.ckpt"))
    with pytest.raises(DataError, match="is not a readable checkpoint"):
        build_report(
            paper_runs,
            tmp_path / "r",
            prepared_dir=tmp_path,
            cache_dir=tmp_path,
            figures=CheckpointFigures(protocol=SampledProtocol(), ckpt_path=bad),
        )


def test_no_runs_and_foreign_output_folders_are_refused(paper_runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MultirecError, match="no finished run under"):
        build_report(empty, tmp_path / "r", prepared_dir=tmp_path, cache_dir=tmp_path)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(MultirecError, match="did not create"):
        build_report(paper_runs, foreign, prepared_dir=tmp_path, cache_dir=tmp_path)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_report_config_composes_with_every_key_read(tmp_path):
    cfg = compose_cfg("report", ["runs=/x", "out=/y", "max_lists=5"], tmp_path)
    assert cfg.protocol._target_.endswith("SampledProtocol")
    assert set(cfg) == {
        "paths",
        "protocol",
        "logger",
        "runs",
        "out",
        "split",
        "dataset",
        "figures",
        "ckpt_path",
        "device",
        "examples",
        "max_lists",
    }
    source = (Path(__file__).parents[1] / "multirec" / "report.py").read_text()
    for key in set(cfg) - {"paths"}:
        assert f"cfg.{key}" in source or f'cfg.get("{key}")' in source, key


def test_report_entry_point_on_a_trained_model(tiny_trained, capsys):
    from multirec import report

    root, info = tiny_trained
    out = root / "report-test"
    report.run(
        compose_cfg(
            "report",
            [
                f"runs={root / 'outputs'}",
                f"out={out}",
                "max_lists=40",
                "examples=3",
                "hydra.job.name=report",  # as `python -m multirec.report` names its job
            ],
            root,
        )
    )
    printed = capsys.readouterr().out
    assert "report written to" in printed and "Top-k retrieval on sample_tiny" in printed
    summary = json.loads((out / "report.json").read_text())
    (offline,) = (root / "run").glob("wandb/offline-run-*/run-*.wandb")  # logger=wandb, offline
    run = read_run(offline)
    assert run["job_type"] == run["name"] == run["group"] == "report"
    assert run["artifacts"] == [("report", "report")]
    assert run["config"]["runs"] == str(root / "outputs")
    assert summary["checkpoint"] == info["ckpt"]
    assert {
        "modality-weights.png",
        "predictions.png",
        "sampled-vs-full-test.png",
        "table2-test-sampled.tex",
    } <= set(summary["files"])
    md = (out / "table2-test-sampled.md").read_text()
    assert [ln.split("|")[1].strip() for ln in md.splitlines() if ln.startswith("| ")][1:] == [
        "*Baselines*",
        "Random",
        "MostPopular",
        "ItemKNN",
        "UserKNN",
        "BPR-MF",
        "*Multimodal models*",
        "EffNet+SBERT",
    ]
    # the model was compared with the strongest baseline on the very same per-list results
    test = summary["significance"]["test/sampled"]
    assert test["a"] == "EffNet+SBERT" and test["b"] in ("ItemKNN", "UserKNN", "BPR-MF")
    lists = pl.read_parquet(
        root / "outputs" / "runs" / "tiny" / "run" / "lists-test-sampled.parquet"
    )
    assert test["n_lists"] == lists.height and test["mean_a"] == pytest.approx(
        lists["ndcg@10"].mean()
    )
    assert (out / "predictions.png").stat().st_size > 10_000


def test_inspecting_a_checkpoint(tiny_trained):
    from multirec.eval.protocols import SampledProtocol
    from multirec.reporting import inspect

    root, info = tiny_trained
    model, ds = checkpoints.load_model(
        info["ckpt"], root / "outputs" / "prepared", root / "outputs" / "cache"
    )
    lists = inspect.subsample(SampledProtocol().lists(ds, "test"), 12)
    assert len(lists) == 12
    items = model.items
    frame = inspect.modality_contributions(model, ds, lists)
    assert model.items is items  # the switched-off input is restored
    assert frame.height == 12 * 21 and frame.filter(pl.col("positive")).height == 12
    for m in ("visual", "text"):
        delta = frame[f"delta_{m}"].to_numpy()
        assert np.isfinite(delta).all() and np.abs(delta).max() > 0
        with inspect.without(model, m):
            alone = inspect.candidate_scores(model, ds, lists)["score"].to_numpy()
        assert np.allclose(frame["score"].to_numpy() - alone, delta)
        # the lift is the delta within its list: it sums to zero over each list's candidates
        lift = frame[f"lift_{m}"].to_numpy().reshape(12, 21)
        assert np.allclose(
            lift, delta.reshape(12, 21) - delta.reshape(12, 21).mean(1, keepdims=True)
        )
    # disagreement counts opposite pushes within a list; not all-agreeing as raw deltas
    # sharing one offset would make it
    disagree = frame["disagree"].to_numpy()
    assert np.array_equal(disagree, (frame["lift_visual"] > 0) != (frame["lift_text"] > 0))
    assert 0 < disagree.mean() < 1
    # rank = 1 + number of candidates of the list scored higher
    scores = frame["score"].to_numpy().reshape(12, 21)
    ranks = frame["rank"].to_numpy().reshape(12, 21)
    assert (ranks == 1 + (scores[:, None, :] > scores[:, :, None]).sum(-1)).all()
    weights = inspect.modality_weights(model, ds, lists)
    w = weights.select(f"w_{m}" for m in model.modalities).to_numpy()
    assert np.allclose(w.sum(1), 1, atol=1e-4) and np.allclose(
        weights["score"], frame["score"], atol=1e-5
    )
    examples = inspect.prediction_examples(frame, ds, 3)
    best, distractors = examples["best"], examples["distractors"]
    assert (
        best["positive"].all()
        and not distractors["positive"].any()
        and best["item_id"].n_unique() == 3
    )
    assert best["probability"][0] == pytest.approx(
        frame.filter(pl.col("positive"))["probability"].max()
    )
    assert best["cover_path"].is_not_null().all()
    shown = [i for group in examples.values() for i in group["item_id"].to_list()]
    assert len(shown) == len(set(shown))  # no item in two rows of the figure
    assert all("user_id" in group.columns for group in examples.values())
    with pytest.raises(ConfigError, match="no audio input"), inspect.without(model, "audio"):
        pass
