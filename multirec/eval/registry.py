"""Which metrics an evaluation reports, chosen by config (``eval.metrics``, ``eval.ks``).

Every evaluation -- the training callback, ``multirec.evaluate``, the benchmarks -- scores
the same :class:`MetricSet`, and both table writers order their columns by it, so adding a
metric is one class here (or anywhere, named by ``_target_`` in ``eval.metrics``) and one
entry in ``conf/eval/default.yaml``.

A metric sees a :class:`RankingContext`: where each held-out positive landed, the top-K
items of every list and the training statistics that beyond-accuracy metrics need. It
returns either one value per list (averaged by the evaluator and kept per list for paired
tests) or, when :attr:`Metric.per_list` is false, one value for the whole evaluation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from hydra.utils import instantiate

from multirec.errors import ConfigError
from multirec.eval import metrics as M


@dataclass(frozen=True)
class RankingContext:
    """What a metric may read about one evaluation's rankings (see :mod:`multirec.eval.metrics`)."""

    ranks: M.PositiveRanks
    n_relevant: torch.Tensor  # long [n_lists]: positives per list
    top: torch.Tensor  # long [n_lists, max K]: top-ranked items of each list
    novelty_weights: torch.Tensor  # float64 [n_items], from training counts only
    n_items: int
    item_features: torch.Tensor  # [n_items] categories or [n_items, d] vectors (for ils)
    ks: tuple[int, ...]

    @cached_property
    def accuracy(self) -> dict[str, torch.Tensor]:
        """Recall, NDCG, hit rate and MRR at every K, computed together (they share the work)."""
        return M.accuracy_metrics(self.ranks, self.n_relevant, self.ks)


class Metric(ABC):
    """One metric at a cut-off K; ``name`` is its column name before ``@K``."""

    name: ClassVar[str]
    per_list: ClassVar[bool] = True
    min_k: ClassVar[int] = 1  # cut-offs below this are skipped (a pairwise measure needs 2)

    @abstractmethod
    def __call__(self, ctx: RankingContext, k: int) -> torch.Tensor | float:
        """Per-list values ``[n_lists]`` (``per_list``) or one value for the evaluation."""


class _Accuracy(Metric):
    def __call__(self, ctx: RankingContext, k: int) -> torch.Tensor:
        return ctx.accuracy[f"{self.name}@{k}"]


class Recall(_Accuracy):
    name = "recall"


class NDCG(_Accuracy):
    name = "ndcg"


class MRR(_Accuracy):
    name = "mrr"


class HitRate(_Accuracy):
    name = "hitrate"


class Novelty(Metric):
    name = "novelty"

    def __call__(self, ctx: RankingContext, k: int) -> torch.Tensor:
        return M.novelty(ctx.top[:, :k], ctx.novelty_weights)


class Coverage(Metric):
    name = "coverage"
    per_list = False

    def __call__(self, ctx: RankingContext, k: int) -> float:
        return M.coverage(ctx.top[:, :k], ctx.n_items)


class IntraListSimilarity(Metric):
    name = "ils"
    min_k = 2

    def __call__(self, ctx: RankingContext, k: int) -> torch.Tensor:
        return M.intra_list_similarity(ctx.top[:, :k], ctx.item_features)


BUILTIN: dict[str, type[Metric]] = {
    cls.name: cls for cls in (Recall, NDCG, MRR, HitRate, Novelty, Coverage, IntraListSimilarity)
}
DEFAULT_METRICS = tuple(BUILTIN)
DEFAULT_KS = (5, 10, 20)


def _build(spec: str | Mapping[str, Any] | Metric) -> Metric:
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        if spec not in BUILTIN:
            raise ConfigError(
                f"eval.metrics: unknown metric {spec!r}; built in: {', '.join(BUILTIN)} "
                "(or give a {_target_: ...} node naming a Metric class)"
            )
        return BUILTIN[spec]()
    metric = instantiate(spec)
    if not isinstance(metric, Metric):
        raise ConfigError(f"eval.metrics: {spec.get('_target_')} is not a multirec Metric")
    return metric


class MetricSet:
    """The metrics and cut-offs of every evaluation in a run, in table order."""

    def __init__(
        self,
        metrics: Sequence[str | Mapping[str, Any] | Metric] = DEFAULT_METRICS,
        ks: Sequence[int] = DEFAULT_KS,
    ) -> None:
        ks = sorted({int(k) for k in ks})
        if not ks or ks[0] < 1:
            raise ConfigError(f"eval.ks must be positive integers, got {list(ks)}")
        self.ks: tuple[int, ...] = tuple(ks)
        self.metrics: tuple[Metric, ...] = tuple(_build(m) for m in metrics)
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"eval.metrics must name each metric once, got {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def columns(self) -> list[str]:
        """Column names (``name@K``) in table order: metric by metric, K ascending."""
        return [f"{m.name}@{k}" for m in self.metrics for k in self.ks if k >= m.min_k]

    def compute(self, ctx: RankingContext) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Per-list columns and whole-evaluation values, keyed ``name@K``."""
        per_list: dict[str, torch.Tensor] = {}
        aggregate: dict[str, float] = {}
        for metric in self.metrics:
            for k in self.ks:
                if k < metric.min_k:
                    continue
                value = metric(ctx, k)
                if metric.per_list:
                    per_list[f"{metric.name}@{k}"] = value
                else:
                    aggregate[f"{metric.name}@{k}"] = float(value)
        return per_list, aggregate


def column_order(columns: Sequence[str], order: Sequence[str] = DEFAULT_METRICS) -> list[str]:
    """``name@K`` columns sorted metric by metric in ``order`` (unknown names last), K ascending."""

    def key(col: str) -> tuple[int, str, int]:
        name, _, k = col.partition("@")
        rank = order.index(name) if name in order else len(order)
        return rank, name, int(k) if k.isdigit() else 0

    return sorted(columns, key=key)
