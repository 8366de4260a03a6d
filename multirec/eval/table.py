"""Plain-text result tables for ``multirec.evaluate`` runs (one table per split and protocol).

``make baselines`` is a Hydra multirun of ``multirec.evaluate`` over baselines and protocols;
:class:`SweepTable`, registered as a Hydra callback in ``conf/evaluate.yaml``, prints one
table per protocol when the sweep ends and writes it to ``table.md`` in the sweep folder.
The paper-style tables with error bars are ``multirec.report``'s job.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from multirec.io import atomic_write_bytes

log = logging.getLogger(__name__)

ORDER = ("recall", "ndcg", "mrr", "hitrate", "novelty", "coverage", "ils")  # then by K


def _column_key(col: str) -> tuple[int, int, int]:
    name, k = col.split("@")
    beyond = name in ("novelty", "coverage", "ils")  # accuracy metrics for every K first
    return (beyond, int(k), ORDER.index(name) if name in ORDER else len(ORDER))


def format_tables(runs: list[tuple[str, dict[str, float]]]) -> str:
    """Markdown tables, one per ``{split}/{protocol}`` prefix, a row per (model, metrics) run."""
    prefixes = sorted({k.rsplit("/", 1)[0] for _, m in runs for k in m if k.count("/") == 2})
    blocks = []
    for prefix in prefixes:
        rows = [(name, m) for name, m in runs if any(k.startswith(prefix + "/") for k in m)]
        cols = sorted(
            {
                k.rsplit("/", 1)[1]
                for _, m in rows
                for k in m
                if k.startswith(prefix + "/") and "@" in k
            },
            key=_column_key,
        )
        n_lists = {int(m[f"{prefix}/n_lists"]) for _, m in rows if f"{prefix}/n_lists" in m}
        width = max(len("model"), *(len(n) for n, _ in rows))
        cw = [max(len(c), 6) for c in cols]  # values print as 0.1234
        lines = [
            f"{prefix} ({', '.join(map(str, sorted(n_lists)))} lists)",
            "| "
            + " | ".join(
                [f"{'model':<{width}}", *(c.rjust(w) for c, w in zip(cols, cw, strict=True))]
            )
            + " |",
            "|" + "|".join(["-" * (width + 2), *("-" * (w + 2) for w in cw)]) + "|",
        ]
        for name, m in rows:
            cells = [
                f"{m[f'{prefix}/{c}']:.4f}".rjust(w) if f"{prefix}/{c}" in m else " " * w
                for c, w in zip(cols, cw, strict=True)
            ]
            lines.append("| " + " | ".join([f"{name:<{width}}", *cells]) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def collect(run_dirs: list[Path]) -> list[tuple[str, dict[str, float]]]:
    """(model name, metrics) of the ``evaluation.json`` in each run directory that has one."""
    runs = []
    for d in run_dirs:
        path = Path(d) / "evaluation.json"
        if path.is_file():
            ev = json.loads(path.read_text())
            runs.append((ev["model"], ev["metrics"]))
    return runs


class SweepTable(Callback):
    """Hydra callback: after a multirun of ``multirec.evaluate``, print and save the tables.

    Job folders are recorded as jobs finish (their resolved output directories), so nothing
    has to re-resolve the sweep folder's interpolations afterwards.
    """

    def __init__(self) -> None:
        self.run_dirs: list[Path] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self.run_dirs.append(Path(config.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        runs = collect(self.run_dirs)
        if not runs:
            log.warning("no finished evaluation in this sweep: nothing to tabulate")
            return
        folder = self.run_dirs[0].parent
        text = format_tables(runs)
        atomic_write_bytes(folder / "table.md", (text + "\n").encode())
        print(text)
        print(f"table written to {folder / 'table.md'}")
