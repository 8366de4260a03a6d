"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Figures are built as :class:`matplotlib.figure.Figure` without pyplot, so nothing here
touches global backend state: the same functions draw into PNG files for the report and
display inline in a notebook.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from scipy import stats

from multirec.io import atomic_write_bytes
from multirec.reporting.tables import Row, Table

PANELS = (("NDCG@10", "ndcg@10"), ("R@10", "recall@10"), ("NDCG@20", "ndcg@20"), ("MRR", "mrr@10"))
THUMB = 160  # cover thumbnail side, pixels
TITLE_CHARS = 24  # characters per line of an item title under its cover
WIDTH = 7.0  # inches: a two-column paper's text width; fonts stay at 8 pt and above
ROW = 0.24  # inches per bar row
KIND_COLOURS = {"baseline": "0.6", "field": "C1", "model": "C0"}
BASELINE_MARKERS = "sDv^P<>"
BASELINE_GREYS = ("0.15", "0.45", "0.65", "0.3", "0.55")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _kind(row: Row) -> str:
    return "field" if row.field_model else row.kind


def _lines(table: Table) -> list[tuple[str, Row | None]]:
    """The figure's rows top to bottom: section headings (bold), a heading for an encoder
    pair shared by several rows (italic, ending in a colon), then each row by what tells it
    apart (no name repeated)."""
    lines: list[tuple[str, Row | None]] = []
    for section in table.sections:
        if section.heading:
            lines.append((section.heading, None))
        bases = Counter(r.label.split(" (")[0] for r in section.rows)
        shown: set[str] = set()
        for r in section.rows:
            label = table.label(r)
            base, _, rest = label.partition(" (")
            if bases[base] > 1 and rest:
                if base not in shown:
                    lines.append((f"{base}:", None))
                    shown.add(base)
                inner, _, marks = rest.rpartition(")")
                label = inner + marks
            lines.append((label, r))
    return lines


def metrics_figure(table: Table) -> Figure:
    """One panel per key metric, one horizontal bar per row (mean; std over seeds as an
    error bar where there are several seeds), baselines grey, the field's models apart."""
    lines = _lines(table)
    fig = _figure(WIDTH, 0.9 + ROW * len(lines))
    axes = fig.subplots(1, len(PANELS), sharey=True)
    y = np.arange(len(lines))
    for ax, (head, metric) in zip(axes, PANELS, strict=True):
        for i, (_, r) in enumerate(lines):
            if r is None or (cell := r.cells.get(metric)) is None:
                continue
            several = cell.n > 1 and not math.isnan(cell.std)
            ax.barh(
                i,
                cell.mean,
                0.7,
                xerr=cell.std if several else None,
                capsize=2 if several else 0,
                color=KIND_COLOURS[_kind(r)],
                error_kw={"lw": 0.8},
            )
        ax.set_title(head, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(left=0)
    axes[0].set_yticks(y, [text for text, _ in lines], fontsize=8)
    for tick, (text, r) in zip(axes[0].get_yticklabels(), lines, strict=True):
        if r is None:
            tick.set_fontstyle("italic") if text.endswith(":") else tick.set_fontweight("bold")
    axes[0].set_ylim(len(lines) - 0.5, -0.5)
    for ax in axes:
        ax.tick_params(axis="y", length=0)
    kinds = dict.fromkeys(_kind(r) for _, r in lines if r is not None)
    names = {"baseline": "baseline", "field": "field model", "model": "multirec model"}
    handles = [Patch(color=KIND_COLOURS[k], label=names[k]) for k in kinds]
    fig.legend(handles=handles, ncols=len(handles), fontsize=8, loc="outside lower center")
    seeds = sorted({len(r.entries) for _, r in lines if r is not None})
    fig.suptitle(
        f"{table.title}, {table.split} split, {table.protocol} protocol: mean"
        + (" \u00b1 std over seeds" if seeds[-1] > 1 else "")
        + (" (no error bar: one seed)" if seeds[0] == 1 and seeds[-1] > 1 else ""),
        fontsize=9,
    )
    return fig


def sampled_vs_full_figure(rows: list[Row], split: str, metric: str = "ndcg@10") -> Figure | None:
    """One point per run (configuration x seed) with both protocols' ``metric``; None if none has both.

    Models take colours, baselines greys with a marker each; the legend sits below the
    axes, off the data. The title gives Kendall's tau between the configurations'
    orderings under the two protocols: 1 means sampled evaluation ranks them exactly as
    full ranking does.
    """
    xs_key, ys_key = f"{split}/sampled/{metric}", f"{split}/full/{metric}"
    points = {
        r.label: (r, np.array([(e.metrics[xs_key], e.metrics[ys_key]) for e in both]))
        for r in rows
        if (both := [e for e in r.entries if xs_key in e.metrics and ys_key in e.metrics])
    }
    if not points:
        return None
    fig = _figure(WIDTH / 2 + 0.5, 3.2 + 0.17 * len(points))
    ax = fig.add_subplot()
    n_models = n_baselines = 0
    for label, (r, pts) in points.items():
        if r.kind == "baseline":
            style = {
                "color": BASELINE_GREYS[n_baselines % len(BASELINE_GREYS)],
                "marker": BASELINE_MARKERS[n_baselines % len(BASELINE_MARKERS)],
            }
            n_baselines += 1
        else:
            style = {"color": f"C{n_models % 10}", "marker": "o"}
            n_models += 1
        ax.scatter(pts[:, 0], pts[:, 1], label=label, alpha=0.85, s=22, **style)
    means = np.array([pts.mean(0) for _, pts in points.values()])
    lines = [f"{split} split: sampled vs full-ranking {metric.upper()}", "one point per run"]
    if len(points) >= 3:
        tau = stats.kendalltau(means[:, 0], means[:, 1]).statistic
        lines[1] += f"; Kendall's \u03c4 of the {len(points)} configurations' orders: {tau:.2f}"
    ax.set_title("\n".join(textwrap.fill(line, 60) for line in lines), fontsize=9)
    ax.set_xlabel(f"sampled {metric.upper()}", fontsize=8)
    ax.set_ylabel(f"full-ranking {metric.upper()}", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="outside lower center", ncols=1, frameon=False)
    return fig


def modality_weights_figure(
    weights: pl.DataFrame, modalities: list[str], title: str = ""
) -> Figure:
    """Mean fusion weight per modality token, held-out positives vs sampled negatives."""
    fig = _figure(WIDTH / 2 + 0.5, 3.0)
    ax = fig.add_subplot()
    x = np.arange(len(modalities))
    for j, (name, part) in enumerate(
        (
            ("held-out positives", weights.filter(pl.col("positive"))),
            ("sampled negatives", weights.filter(~pl.col("positive"))),
        )
    ):
        cols = [part[f"w_{m}"].to_numpy() for m in modalities]
        ax.bar(
            x + (j - 0.5) * 0.4,
            [c.mean() for c in cols],
            0.4,
            yerr=[c.std() for c in cols],
            capsize=2,
            label=f"{name} ({part.height} pairs)",
            color=f"C{j}",
            error_kw={"lw": 0.8},
        )
    ax.axhline(1 / len(modalities), color="grey", ls="--", lw=1, label="uniform weight")
    ax.set_xticks(x, modalities, fontsize=8, rotation=30, ha="right")
    ax.tick_params(labelsize=8)
    ax.set_ylabel("fusion weight (mean \u00b1 std)", fontsize=8)
    ax.set_title(textwrap.fill(title or "What the fusion weighs", 50), fontsize=9)
    fig.legend(fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _cover(path: str | None) -> np.ndarray | None:
    if not path or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB, THUMB))
            return np.asarray(img)
    except OSError:
        return None


def predictions_figure(examples: dict[str, pl.DataFrame]) -> Figure:
    """Covers, titles and probabilities of the best and worst predictions (the paper's Figure 2)."""
    captions = {
        "best": "best: held-out interactions,\nhighest probability",
        "missed": "missed: held-out interactions,\nlowest probability",
        "distractors": "worst: never-interacted items,\nhighest probability",
    }
    groups = [(k, v) for k, v in examples.items() if v.height]
    n = max((v.height for _, v in groups), default=1)
    fig = _figure(min(WIDTH, 1.6 * n + 1.0), 2.6 * max(len(groups), 1))
    axes = fig.subplots(max(len(groups), 1), n, squeeze=False)
    for i, (name, frame) in enumerate(groups):
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= frame.height:
                ax.set_axis_off()
                continue
            row = frame.row(j, named=True)
            img = _cover(row.get("cover_path"))
            if img is None:
                ax.text(0.5, 0.5, "no cover", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(img)
            title = (row.get("title") or "").strip() or "(no title)"
            words = textwrap.wrap(title, TITLE_CHARS, max_lines=2, placeholder=" \u2026")
            head = [f"{row['item_id']}  p = {row['probability']:.1%}"]
            if row.get("user_id"):
                head.append(f"for user {row['user_id']}")
            ax.set_title("\n".join([*head, *words]), fontsize=7)
            if j == 0:
                ax.set_ylabel(captions.get(name, name), fontsize=8)
    return fig
