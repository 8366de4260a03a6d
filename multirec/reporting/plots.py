"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Figures are built as :class:`matplotlib.figure.Figure` without pyplot, so nothing here
touches global backend state: the same functions draw into PNG files for the report and
display inline in a notebook.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from scipy import stats

from multirec.io import atomic_write_bytes
from multirec.reporting.tables import COLUMNS, Row, Table, protocol_description

ACCURACY = [(h, m) for h, m in COLUMNS if not m.startswith("novelty")]
THUMB = 160  # cover thumbnail side, pixels


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def metrics_figure(table: Table) -> Figure:
    """Grouped bars: each row's accuracy metrics, error bars = std over seeds."""
    rows = table.rows
    fig = _figure(max(6.0, 1.1 * len(rows) + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(ACCURACY)
    x = np.arange(len(rows))
    for j, (head, metric) in enumerate(ACCURACY):
        means = np.array([r.mean(metric) for r in rows])
        errs = np.array(
            [
                0.0 if (c := r.cells.get(metric)) is None or math.isnan(c.std) else c.std
                for r in rows
            ]
        )
        bars = ax.bar(
            x + (j - (len(ACCURACY) - 1) / 2) * width,
            np.nan_to_num(means),
            width,
            yerr=errs,
            capsize=2,
            label=head,
            color=f"C{j}",
        )
        for bar, r in zip(bars, rows, strict=True):
            if r.kind == "baseline":
                bar.set_hatch("//")
                bar.set_alpha(0.6)
    ax.set_xticks(x, [table.label(r) for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{table.split} metric (mean \u00b1 std over seeds)")
    title = f"{table.title}, {table.split} split: {protocol_description(rows, table.protocol)}"
    ax.set_title("\n".join(textwrap.wrap(title, int(fig.get_figwidth() * 11))), fontsize=9)
    handles = [Patch(color=f"C{j}", label=head) for j, (head, _) in enumerate(ACCURACY)]
    handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label="baseline"))
    fig.legend(handles=handles, ncols=len(handles), fontsize=8, loc="outside lower center")
    ax.grid(axis="y", alpha=0.3)
    return fig


def sampled_vs_full_figure(rows: list[Row], split: str, metric: str = "ndcg@10") -> Figure | None:
    """One point per run (configuration x seed) with both protocols' ``metric``; None if none has both.

    The title gives Kendall's tau between the configurations' orderings under the two
    protocols: 1 means sampled evaluation ranks them exactly as full ranking does.
    """
    xs_key, ys_key = f"{split}/sampled/{metric}", f"{split}/full/{metric}"
    points = [
        (r, e.metrics[xs_key], e.metrics[ys_key])
        for r in rows
        for e in r.entries
        if xs_key in e.metrics and ys_key in e.metrics
    ]
    if not points:
        return None
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    labels = list(dict.fromkeys(r.label for r, _, _ in points))
    means = []
    for j, label in enumerate(labels):
        pts = np.array([(x, y) for r, x, y in points if r.label == label])
        marker = (
            "s" if next(r for r, _, _ in points if r.label == label).kind == "baseline" else "o"
        )
        ax.scatter(pts[:, 0], pts[:, 1], color=f"C{j % 10}", marker=marker, label=label, alpha=0.8)
        means.append(pts.mean(0))
    means = np.array(means)
    title = f"{split}: sampled vs full-ranking {metric} (one point per run)"
    if len(labels) >= 3:
        tau = stats.kendalltau(means[:, 0], means[:, 1]).statistic
        title += f"\nKendall's \u03c4 between the {len(labels)} configurations' orders: {tau:.2f}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"sampled {metric}")
    ax.set_ylabel(f"full-ranking {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def modality_weights_figure(
    weights: pl.DataFrame, modalities: list[str], title: str = ""
) -> Figure:
    """Mean fusion weight per modality token, held-out positives vs sampled negatives."""
    fig = _figure(max(5.0, 0.9 * len(modalities) + 2), 3.8)
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
            capsize=3,
            label=f"{name} ({part.height})",
            color=f"C{j}",
        )
    ax.axhline(1 / len(modalities), color="grey", ls="--", lw=1, label="uniform")
    ax.set_xticks(x, modalities)
    ax.set_ylabel("fusion weight (mean \u00b1 std)")
    ax.set_title(title or "What the fusion weighs", fontsize=9)
    ax.legend(fontsize=8)
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
    fig = _figure(2.3 * n + 1.2, 2.9 * max(len(groups), 1))
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
            ax.set_title(
                f"{row['item_id']}  p = {row['probability']:.2%}\n{title[:26]}", fontsize=7
            )
            if j == 0:
                ax.set_ylabel(captions.get(name, name), fontsize=8)
    return fig
