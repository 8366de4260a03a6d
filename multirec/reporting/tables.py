"""The paper's Table 2 (baselines, the field's models, then multirec's multimodal models by
encoder pair) and Table 3 (ablation: full, text-only, visual-only), one table per split and
protocol, at K = 5, 10 and 20.

Cells are mean ± sample standard deviation over seeds (no ± with a single seed; the
``Seeds`` column says how many). The best mean per column is bold (all rows tied with it
at the printed precision). Every table names its protocol: sampled and full-ranking
numbers are not comparable and may even order models differently. Rows whose settings
``multirec.tune`` chose are marked, and the notes state the budget they were tuned with.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from multirec.reporting.runs import TEXT_NAMES, VISUAL_NAMES, Entry

# (column heading, metric name) in the paper's order; MRR is truncated at 10 (as the paper's).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("R@5", "recall@5"),
    ("NDCG@5", "ndcg@5"),
    ("R@10", "recall@10"),
    ("NDCG@10", "ndcg@10"),
    ("R@20", "recall@20"),
    ("NDCG@20", "ndcg@20"),
    ("MRR", "mrr@10"),
    ("Novelty", "novelty@10"),
)
KEY_METRIC = "ndcg@10"  # what "best model" and "strongest baseline" mean
PROTOCOL_ORDER = ("sampled", "full", "cold_items")
BASELINE_ORDER = ("Random", "MostPopular", "ItemKNN", "UserKNN", "BPR-MF")
DIGITS = 4
DIFFERENT_LISTS = "\u2020"  # dagger
TUNED = "\u2021"  # double dagger
TIE = "\x00tie"  # no value of a setting is shared by more rows than any other


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float  # NaN with a single seed
    n: int


@dataclass
class Row:
    """One configuration aggregated over its seeds for one split and protocol."""

    label: str
    kind: str
    config: dict[str, str]
    entries: list[Entry]
    cells: dict[str, Cell]
    n_lists: int | None

    @property
    def seeds(self) -> list[int]:
        return sorted(e.seed for e in self.entries)

    def mean(self, metric: str) -> float:
        cell = self.cells.get(metric)
        return cell.mean if cell is not None else math.nan

    @property
    def tuning(self) -> dict | None:
        """What multirec.tune recorded (its seeds share it: tuning is part of the row's key)."""
        return self.entries[0].tuning

    @property
    def field_model(self) -> bool:
        return self.entries[0].field_model


@dataclass
class Section:
    heading: str | None
    rows: list[Row]


@dataclass
class Table:
    name: str  # file stem, e.g. "table2-test-sampled"
    title: str
    caption: str
    split: str
    protocol: str
    sections: list[Section]
    notes: list[str] = field(default_factory=list)
    odd: set[int] = field(default_factory=set)  # ids of rows scored on other lists than the rest

    def label(self, row: Row) -> str:
        marks = (DIFFERENT_LISTS if id(row) in self.odd else "") + (TUNED if row.tuning else "")
        return row.label + marks

    @property
    def rows(self) -> list[Row]:
        return [r for s in self.sections for r in s.rows]

    def best(self, metric: str) -> set[int]:
        """ids of the rows holding the best mean of ``metric`` (ties at the printed precision)."""
        means = {
            id(r): round(r.mean(metric), DIGITS)
            for r in self.rows
            if not math.isnan(r.mean(metric))
        }
        if not means:
            return set()
        top = max(means.values())
        return {k for k, v in means.items() if v == top}


def protocols_of(entries: list[Entry], split: str) -> list[str]:
    """Protocols with results on ``split``, the paper's first."""
    found = {
        k.split("/")[1]
        for e in entries
        for k in e.metrics
        if k.startswith(f"{split}/") and k.count("/") == 2
    }
    return sorted(
        found,
        key=lambda p: (PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else len(PROTOCOL_ORDER), p),
    )


def aggregate(entries: list[Entry], split: str, protocol: str) -> list[Row]:
    """Rows (one per configuration) of the entries that have ``split/protocol`` results."""
    prefix = f"{split}/{protocol}/"
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        if prefix + KEY_METRIC in e.metrics:
            groups.setdefault(e.config_key, []).append(e)
    rows = []
    for members in groups.values():
        cells = {}
        for _, metric in COLUMNS:
            values = np.array(
                [e.metrics[prefix + metric] for e in members if prefix + metric in e.metrics]
            )
            if values.size:
                std = float(values.std(ddof=1)) if values.size > 1 else math.nan
                cells[metric] = Cell(float(values.mean()), std, int(values.size))
        counts = Counter(
            int(e.metrics[prefix + "n_lists"]) for e in members if prefix + "n_lists" in e.metrics
        )
        n_lists = counts.most_common(1)[0][0] if counts else None
        first = members[0]
        rows.append(
            Row(
                first.label,
                first.kind,
                first.config,
                sorted(members, key=lambda e: e.seed),
                cells,
                n_lists,
            )
        )
    _disambiguate(rows)
    return rows


def _differing(dicts: list[dict[str, str]]) -> list[str]:
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({d.get(k) for d in dicts}) > 1]


def _plain(value: str) -> str:
    """A setting's JSON text as a reader writes it: ``false``, ``cls``, ``128``."""
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    return parsed if isinstance(parsed, str) else json.dumps(parsed)


def _told_by_choice(key: str, rows: list[Row], choice_keys: list[str]) -> bool:
    """Whether setting ``key`` only follows a differing group choice (``fusion._target_``
    with ``fusion=gated``): constant among the rows that made the same choice."""
    group = key.split(".")[0]
    if group not in {k.split("/")[0] for k in choice_keys}:
        return False
    values: dict[tuple, set[str | None]] = {}
    for r in rows:
        chosen = tuple(r.config.get(k) for k in choice_keys if k.split("/")[0] == group)
        values.setdefault(chosen, set()).add(r.entries[0].settings.get(key))
    return all(len(v) == 1 for v in values.values())


def _disambiguate(rows: list[Row]) -> None:
    """Append what tells apart rows sharing a label: every differing group choice, for each
    row (``(fusion=gated)``), and every other differing setting where the row departs from
    the value most rows share (``(model.use_ids=false)``; all rows when no value is shared
    by most; not where the row lacks the setting, as concatenation lacks a pooling). Should
    two rows still read alike, every differing setting is named for every row."""
    by_label: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        by_label.setdefault((r.kind, r.label), []).append(r)
    for same in by_label.values():
        if len(same) < 2:
            continue
        choice_keys = _differing([r.config for r in same])
        settings = [r.entries[0].settings for r in same]
        differing = _differing(settings)
        keys = [k for k in differing if not _told_by_choice(k, same, choice_keys)]
        usual = {k: _usual([s.get(k) for s in settings]) for k in keys}
        parts = [
            [f"{k}={r.config.get(k, '-')}" for k in choice_keys]
            + [
                f"{k}={_plain(values[k])}"
                for k in keys
                if k in values and (usual[k] == TIE or values[k] != usual[k])
            ]
            for r, values in zip(same, settings, strict=True)
        ]
        if len({tuple(p) for p in parts}) < len(same):
            parts = [
                [f"{k}={r.config.get(k, '-')}" for k in choice_keys]
                + [f"{k}={_plain(values.get(k, '-'))}" for k in differing]
                for r, values in zip(same, settings, strict=True)
            ]
        for r, p in zip(same, parts, strict=True):
            if p:
                r.label += " (" + ", ".join(p) + ")"


def _usual(values: list[str | None]) -> str | None:
    """The value more rows share than any other (None: most rows lack the setting);
    ``TIE`` when two values are shared by as many rows."""
    counts = Counter(values).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return TIE
    return counts[0][0]


def _rest(row: Row) -> tuple:
    """Everything but the encoders: ablation variants must agree on it."""
    config = {k: v for k, v in row.config.items() if not k.startswith("encoder/")}
    settings = {k: v for k, v in row.entries[0].settings.items() if not k.startswith("encoder.")}
    return tuple(sorted(config.items())), tuple(sorted(settings.items()))


def _encoders(row: Row) -> tuple[str, str]:
    return row.entries[0].encoders


def _multirec(rows: list[Row]) -> list[Row]:
    """Rows of multirec's own model (named by encoder pair; the ablation is about them)."""
    return [r for r in rows if r.kind == "model" and not r.field_model]


def _baseline_order(row: Row) -> tuple:
    base = row.entries[0].label
    return (
        BASELINE_ORDER.index(base) if base in BASELINE_ORDER else len(BASELINE_ORDER),
        row.label,
    )


def protocol_description(rows: list[Row], protocol: str) -> str:
    """How the lists were built, from the settings any of ``rows`` recorded (baselines do)."""
    settings = next(
        (e.protocols[protocol] for r in rows for e in r.entries if protocol in e.protocols), {}
    )
    n = settings.get("num_negatives")
    if protocol == "sampled":
        negatives = f"{n} sampled" if n else "sampled"
        return f"sampled (the paper's): each held-out positive ranked against {negatives} never-interacted items"
    if protocol == "full":
        return "full ranking: every item ranked, the user's training items masked"
    if protocol == "cold_items":
        pool = settings.get("negative_pool", "cold")
        negatives = f"{n} " if n else ""
        return f"cold items: held-out items without training interactions ranked against {negatives}{pool} items"
    return protocol


def _caption(
    what: str, rows: list[Row], every: list[Row], split: str, protocol: str, dataset: str
) -> tuple[str, list[str], set[int]]:
    """Caption, notes, and the ids of ``rows`` scored on another number of lists than most.

    ``every`` is all rows of the protocol, whose recorded settings describe it.
    """
    counts = Counter(r.n_lists for r in rows if r.n_lists is not None)
    notes = []
    lists = ""
    odd: list[Row] = []
    if counts:
        common = counts.most_common(1)[0][0]
        lists = f"; {common} lists"
        odd = [r for r in rows if r.n_lists is not None and r.n_lists != common]
        if odd:
            notes.append(
                f"{DIFFERENT_LISTS} scored on a different number of lists than the rest "
                f"({', '.join(str(r.n_lists) for r in odd)} vs {common}): not the same candidates, compare with care"
            )
    caption = (
        f"{what} on {dataset}, {split} split. Protocol: {protocol_description(every, protocol)}{lists}. "
        f"Mean \u00b1 std over seeds; best per column in bold."
    )
    return caption, notes + tuning_notes(rows), {id(r) for r in odd}


def budget_text(tuning: dict) -> str:
    """The budget a tuned row had, in words (from its ``tuning.json``)."""
    split, protocol, metric = str(tuning["metric"]).split("/")
    return (
        f"{tuning['trials']} trials of Optuna's {tuning['sampler']} (seed {tuning['sampler_seed']}) "
        f"over the space its config declares"
        f"{', plus its configured settings as one more' if tuning.get('defaults_trial') else ''}, "
        f"chosen on {metric.upper()} of the {split} split "
        f"under the {protocol} protocol; the chosen settings were tested once per seed"
    )


def tuning_notes(rows: list[Row]) -> list[str]:
    """One note per tuning budget among ``rows`` (naming the rows if they had several)."""
    budgets: dict[str, list[str]] = {}
    for r in rows:
        if r.tuning:
            budgets.setdefault(budget_text(r.tuning), []).append(r.label)
    if not budgets:
        return []
    notes = [
        f"{TUNED} tuned by multirec.tune"
        + (f" ({', '.join(labels)})" if len(budgets) > 1 else "")
        + f": {text}"
        for text, labels in budgets.items()
    ]
    return [*notes, f"rows without {TUNED} ran with their configured settings"]


def table2(rows: list[Row], split: str, protocol: str, dataset: str) -> Table | None:
    """Baselines, the field's models, then multirec's models that use both a visual and a
    text encoder, by encoder pair; single-modality models that no ablation group of
    Table 3 holds come last, so every row is in one of the two tables."""
    baselines = sorted((r for r in rows if r.kind == "baseline"), key=_baseline_order)
    field_models = sorted((r for r in rows if r.field_model), key=lambda r: r.label)
    models = sorted(
        (r for r in _multirec(rows) if "none" not in _encoders(r)), key=lambda r: r.label
    )
    ablated = {id(r) for group in ablation_groups(rows) for r in group[1:] if r is not None}
    single = [r for r in _multirec(rows) if "none" in _encoders(r)]
    unplaced = sorted((r for r in single if id(r) not in ablated), key=lambda r: r.label)
    if not baselines and not field_models and not models and not unplaced:
        return None
    sections = [
        Section(h, rs)
        for h, rs in (
            ("Baselines", baselines),
            ("Field models", field_models),
            ("Multimodal models", models),
            ("Single-modality models", unplaced),
        )
        if rs
    ]
    members = baselines + field_models + models + unplaced
    caption, notes, odd = _caption("Top-k retrieval", members, rows, split, protocol, dataset)
    if ablated:
        notes.append(
            "single-modality models beside a full pair with otherwise equal settings are in "
            "the ablation table (Table 3)"
        )
    if unplaced:
        notes.append(
            "single-modality models: no full-pair run with otherwise equal settings to "
            "ablate against, so not in Table 3"
        )
    return Table(
        f"table2-{split}-{protocol}", "Table 2", caption, split, protocol, sections, notes, odd
    )


def ablation_groups(rows: list[Row]) -> list[tuple[Row, Row | None, Row | None]]:
    """(full pair, its text-only variant, its visual-only variant) of multirec's models.

    A group is formed for a full pair (V, T) when a text-only run with T or a visual-only run
    with V exists with otherwise equal settings; if some pairs have both variants, only
    those are shown (a text-only run would otherwise join every pair using its encoder).
    """
    models = _multirec(rows)
    single = {(_encoders(r), _rest(r)): r for r in models if "none" in _encoders(r)}
    groups = []
    for full in sorted((r for r in models if "none" not in _encoders(r)), key=lambda r: r.label):
        v, t = _encoders(full)
        text_only = single.get((("none", t), _rest(full)))
        visual_only = single.get(((v, "none"), _rest(full)))
        if text_only or visual_only:
            groups.append((full, text_only, visual_only))
    if any(t and v for _, t, v in groups):
        groups = [g for g in groups if g[1] and g[2]]
    return groups


def table3(rows: list[Row], split: str, protocol: str, dataset: str) -> Table | None:
    """Ablation: each full pair next to its text-only and visual-only variants
    (:func:`ablation_groups`)."""
    groups = ablation_groups(rows)
    if not groups:
        return None
    sections = []
    for full, text_only, visual_only in groups:
        v, t = _encoders(full)
        group = [_relabel(full, f"{full.label} (Full)")]
        if text_only:
            group.append(_relabel(text_only, f"w/o visual (Text-only: {TEXT_NAMES.get(t, t)})"))
        if visual_only:
            group.append(_relabel(visual_only, f"w/o text (Visual-only: {VISUAL_NAMES.get(v, v)})"))
        sections.append(Section(full.label if len(groups) > 1 else None, group))
    members = [r for s in sections for r in s.rows]
    caption, notes, odd = _caption(
        "Ablation of the modalities", members, rows, split, protocol, dataset
    )
    return Table(
        f"table3-{split}-{protocol}", "Table 3", caption, split, protocol, sections, notes, odd
    )


def _relabel(row: Row, label: str) -> Row:
    return Row(label, row.kind, row.config, row.entries, row.cells, row.n_lists)
