"""Plain-text result tables for runs and sweeps (one table per split and protocol).

The terminal gets the compact tables (:data:`COMPACT`: recall, NDCG and MRR at 10 and 20,
the sampled protocol before full ranking); every metric stays in the run's ``metrics.json``
and in a sweep's ``table.md``. ``make baselines`` is a Hydra multirun of ``multirec.evaluate``
over baselines and protocols, and a train sweep (``python -m multirec.train -m ...``) one
over model settings: :class:`SweepTable`, registered as a Hydra callback in
``conf/evaluate.yaml`` and ``conf/train.yaml``, prints the tables over the sweep's jobs when
it ends and writes the full ones to ``table.md`` in the sweep folder. The paper-style tables
with error bars are ``multirec.report``'s job.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from multirec.errors import ConfigError
from multirec.io import atomic_write_bytes

log = logging.getLogger(__name__)

ORDER = ("recall", "ndcg", "mrr", "hitrate", "novelty", "coverage", "ils")  # then by K
PROTOCOL_ORDER = ("sampled", "full")  # then any other protocol, by name
# the columns a terminal table keeps; the others are in the files
COMPACT = frozenset(f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in (10, 20))


def _column_key(col: str) -> tuple[int, int, int]:
    name, k = col.split("@")
    beyond = name in ("novelty", "coverage", "ils")  # accuracy metrics for every K first
    return (beyond, int(k), ORDER.index(name) if name in ORDER else len(ORDER))


def _prefix_key(prefix: str) -> tuple[str, int, str]:
    split, protocol = prefix.split("/")
    rank = PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
    return (split, rank, protocol)


def format_tables(runs: list[tuple[str, dict[str, float]]], compact: bool = False) -> str:
    """Markdown tables, one per ``{split}/{protocol}`` prefix, a row per (label, metrics) run;
    ``compact`` keeps only the :data:`COMPACT` columns."""
    prefixes = sorted(
        {k.rsplit("/", 1)[0] for _, m in runs for k in m if k.count("/") == 2}, key=_prefix_key
    )
    blocks = []
    for prefix in prefixes:
        rows = [(name, m) for name, m in runs if any(k.startswith(prefix + "/") for k in m)]
        cols = sorted(
            {
                k.rsplit("/", 1)[1]
                for _, m in rows
                for k in m
                if k.startswith(prefix + "/")
                and "@" in k
                and (not compact or k.rsplit("/", 1)[1] in COMPACT)
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


def job_labels(overrides: list[list[str]]) -> list[str]:
    """One label per job: those of its overrides whose value is not the same in every job."""
    parsed = [dict(o.partition("=")[::2] for o in job) for job in overrides]
    keys = dict.fromkeys(k for job in parsed for k in job)
    varying = [k for k in keys if len({job.get(k) for job in parsed}) > 1]
    return [" ".join(f"{k}={job[k]}" for k in varying if k in job) for job in parsed]


def collect(jobs: list[tuple[Path, list[str]]], label: str) -> list[tuple[str, dict[str, float]]]:
    """(label, metrics) of each job whose run directory has an ``evaluation.json``; ``label``
    is ``model`` (the model's name) or ``overrides`` (the job's overrides that vary across
    the jobs, or the model's name where none does)."""
    found = [
        (json.loads((d / "evaluation.json").read_text()), overrides)
        for d, overrides in jobs
        if (d / "evaluation.json").is_file()
    ]
    names = [ev["model"] for ev, _ in found]
    if label == "overrides":
        names = [o or n for o, n in zip(job_labels([o for _, o in found]), names, strict=True)]
    return [(n, ev["metrics"]) for n, (ev, _) in zip(names, found, strict=True)]


class SweepTable(Callback):
    """Hydra callback: after a multirun, print the compact tables over its jobs and save the
    full ones, a row per ``label`` (``model``: rows of the same model merge, as the jobs of
    one baseline under each protocol do; ``overrides``: a row per job).

    Job folders and overrides are recorded as jobs finish (their resolved output directories),
    so nothing has to re-resolve the sweep folder's interpolations afterwards.
    """

    def __init__(self, label: str = "model") -> None:
        if label not in ("model", "overrides"):
            raise ConfigError(
                f"hydra.callbacks.table.label must be model or overrides, got {label!r}"
            )
        self.label = label
        self.jobs: list[tuple[Path, list[str]]] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        overrides = list(config.hydra.overrides.task)
        self.jobs.append((Path(config.hydra.runtime.output_dir), overrides))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        runs = collect(self.jobs, self.label)
        if not runs:  # a sweep with test=false (as a tuning search) has no test metrics
            log.debug("no job of this sweep wrote test metrics: nothing to tabulate")
            return
        folder = self.jobs[0][0].parent
        atomic_write_bytes(folder / "table.md", (format_tables(runs) + "\n").encode())
        print(format_tables(runs, compact=True))
        print(f"every metric: {folder / 'table.md'}")
