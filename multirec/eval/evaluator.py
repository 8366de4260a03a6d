"""Score any :class:`~multirec.models.base.Recommender` under a protocol; write the results.

:func:`evaluate` is the single evaluation path for baselines (``python -m multirec.evaluate``)
and the neural model's validation/test loop. It calls only ``model.score`` (candidate lists)
or ``model.score_all`` (full ranking), in batches, and computes every metric with batched
tensor operations (:mod:`multirec.eval.metrics`) -- no per-user Python loop.

Per-list results (:attr:`EvalResult.lists`, a polars DataFrame, one row per list; the mean of
each metric column equals the reported metric) keep what paired significance tests need:

* sampled / cold_items: ``user_idx, user_id, item_idx, item_id, rank`` (the positive and its
  expected rank among the list's 1 + num_negatives items), key columns ``user_id, item_id``;
* full: the same columns with ``item_idx, item_id, rank`` as lists (all of the user's
  held-out positives; a rank is null when the positive is below the top ``max(ks)`` items,
  where only metrics are computed exactly), key column ``user_id``;

plus ``user_has_history`` (the user has training interactions), ``n_unseen_positives``
(positives without any training interaction) and one column per per-list metric.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError, MultirecError
from multirec.eval import metrics as M
from multirec.eval.candidates import CandidateLists
from multirec.eval.protocols import FullRankingTargets, Protocol
from multirec.eval.registry import MetricSet, RankingContext
from multirec.io import atomic_write_bytes, atomic_write_json
from multirec.models.base import Recommender, mask_excluded
from multirec.runtime.timing import progress

log = logging.getLogger(__name__)

SCORE_BUDGET = 1 << 24  # scores per model call when batch_size is not given (64 MiB float32)


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one (split, protocol) evaluation and its per-list results."""

    split: str
    protocol: str
    metrics: dict[str, float]
    lists: pl.DataFrame
    key_columns: tuple[str, ...]  # identify a list across models (for paired tests)


def tag_features(dataset: PreparedDataset) -> torch.Tensor:
    """Categorical item features (tag ids; 0 = rare/unknown) for intra-list similarity.

    Available for every prepared dataset without an encoder cache, so baselines and the
    neural model report ILS on the same footing.
    """
    return torch.from_numpy(dataset.tag_index())


def evaluate(
    model: Recommender,
    dataset: PreparedDataset,
    protocol: Protocol,
    split: str,
    *,
    metrics: MetricSet | None = None,
    item_features: torch.Tensor | None = None,
    batch_size: int | None = None,
    show_progress: bool = True,
) -> EvalResult:
    """Evaluate ``model`` on ``split`` (``valid`` or ``test``) of ``dataset`` under ``protocol``.

    ``metrics`` says what is reported (default: every built-in metric at K = 5, 10, 20).
    ``item_features`` (float [n_items, d] or integer categories [n_items]) define ``ils@K``;
    by default the dataset's tags. ``batch_size`` is lists per ``score`` call (candidate
    protocols) or users per ``score_all`` call (full ranking); by default about 16 M scores
    per call. ``show_progress``: a progress bar once the evaluation has run a few seconds.
    """
    metrics = metrics or MetricSet()
    model.check_dataset(dataset)
    lists = protocol.lists(dataset, split)
    per_user = isinstance(lists, FullRankingTargets)
    kmax = metrics.ks[-1]
    if not per_user and kmax > lists.items.shape[1]:
        raise ConfigError(
            f"eval.ks {list(metrics.ks)} exceed the {protocol.name} list length "
            f"{lists.items.shape[1]}; lower eval.ks or raise the protocol's num_negatives"
        )
    train = dataset.interaction_matrix("train")
    item_users = np.asarray(train.sum(axis=0)).ravel()
    user_items = np.asarray(train.sum(axis=1)).ravel()
    with torch.no_grad():
        rank = _rank_full if per_user else _rank_candidates
        bar = f"{split} {protocol.name}" if show_progress else None
        ranks, n_rel, top, pos_items = rank(model, lists, kmax, batch_size, bar)
    ctx = RankingContext(
        ranks=ranks,
        n_relevant=n_rel,
        top=top,
        novelty_weights=M.novelty_weights(item_users, int((user_items > 0).sum())),
        n_items=dataset.n_items,
        item_features=tag_features(dataset) if item_features is None else item_features,
        ks=metrics.ks,
    )
    per_list, aggregate = metrics.compute(ctx)
    users = lists.users
    frame = _frame(dataset, per_user, users, ranks, pos_items, item_users, user_items, per_list)
    prefix = f"{split}/{protocol.name}/"
    out: dict[str, float] = {prefix + k: float(v.mean()) for k, v in per_list.items()}
    out.update({prefix + k: v for k, v in aggregate.items()})
    out[prefix + "n_lists"] = frame.height
    out[prefix + "n_users"] = int(np.unique(users).size)
    out[prefix + "n_lists_user_without_history"] = int((~frame["user_has_history"]).sum())
    out[prefix + "n_unseen_positives"] = int(frame["n_unseen_positives"].sum())
    if protocol.name == "cold_items":
        out[prefix + "scores_cold_items"] = float(model.scores_cold_items)
        if not model.scores_cold_items:
            log.warning(
                "%s knows items only by their training interactions: the cold items tie, so "
                "its cold_items figures are those of a random order",
                model.name,
            )
    return EvalResult(
        split, protocol.name, dict(sorted(out.items())), frame, list_key_columns(per_user)
    )


def list_key_columns(per_user: bool) -> tuple[str, ...]:
    """Columns identifying a list across models: the user for full ranking (one list per
    user), the user and the positive item for candidate lists."""
    return ("user_id",) if per_user else ("user_id", "item_id")


def _batches(n: int, size: int, bar: str | None) -> Iterator[slice]:
    """Slices of ``size`` rows, under a progress bar named ``bar`` (none: no bar)."""
    for start in progress(range(0, n, size), bar or "", "batch", enabled=bar is not None):
        yield slice(start, min(start + size, n))


def _checked(scores: torch.Tensor, shape: tuple[int, int], model: Recommender) -> torch.Tensor:
    """Refuse malformed or non-finite scores instead of ranking garbage."""
    if tuple(scores.shape) != shape:
        raise MultirecError(
            f"{model.name} returned scores of shape {tuple(scores.shape)}, expected {shape}"
        )
    suspect = ~torch.isfinite(scores.sum(dim=1))  # cheap; a row sum may also overflow, so recheck
    if suspect.any():
        bad = int((~torch.isfinite(scores[suspect])).sum())
        if bad:
            raise MultirecError(
                f"{model.name} returned {bad} non-finite scores (NaN or infinite); "
                "fix the model rather than evaluating it"
            )
    return scores


def _rank_candidates(
    model: Recommender, lists: CandidateLists, kmax: int, batch_size: int | None, bar: str | None
) -> tuple[M.PositiveRanks, torch.Tensor, torch.Tensor, np.ndarray]:
    n, c = lists.items.shape
    size = batch_size or max(1, SCORE_BUDGET // c)
    parts: list[tuple[torch.Tensor, ...]] = []
    for b in _batches(n, size, bar):
        users = torch.from_numpy(lists.users[b])
        items = torch.from_numpy(lists.items[b])
        scores = _checked(model.score(users, items), (len(users), c), model)
        items = items.to(scores.device)
        rows = torch.arange(len(users), device=scores.device)
        ordered = torch.sort(scores, dim=1, descending=True).values  # depth = whole list: exact
        counts = M.rank_positives(scores, ordered, rows, torch.zeros_like(rows))
        parts.append((*(x.cpu() for x in counts), M.top_k_of_candidates(items, scores, kmax).cpu()))
    above, tied, beyond, top = (_cat([p[j] for p in parts]) for j in range(4))
    ranks = M.PositiveRanks(torch.arange(n), above, tied, beyond, n)
    return ranks, torch.ones(n, dtype=torch.long), top.reshape(n, kmax), lists.items[:, 0]


def _rank_full(
    model: Recommender,
    targets: FullRankingTargets,
    kmax: int,
    batch_size: int | None,
    bar: str | None,
) -> tuple[M.PositiveRanks, torch.Tensor, torch.Tensor, np.ndarray]:
    positives = targets.positives
    n_users, n_items = positives.shape
    size = batch_size or max(1, SCORE_BUDGET // n_items)
    parts: list[tuple[torch.Tensor, ...]] = []
    for b in _batches(n_users, size, bar):
        users = targets.users[b]
        scores = _checked(model.score_all(torch.from_numpy(users)), (len(users), n_items), model)
        mask_excluded(scores, targets.exclude, users)
        top = torch.topk(scores, min(kmax, n_items), dim=1)
        pos = positives[b].tocoo()  # row-major, like the whole matrix
        dev = scores.device
        counts = M.rank_positives(
            scores,
            top.values,
            torch.from_numpy(pos.row.astype(np.int64)).to(dev),
            torch.from_numpy(pos.col.astype(np.int64)).to(dev),
        )
        parts.append((*(x.cpu() for x in counts), top.indices.cpu()))
    above, tied, beyond, top = (_cat([p[j] for p in parts]) for j in range(4))
    n_pos = np.diff(positives.indptr)
    li = torch.from_numpy(np.repeat(np.arange(n_users), n_pos))
    ranks = M.PositiveRanks(li, above, tied, beyond, n_users)
    return (
        ranks,
        torch.from_numpy(n_pos.astype(np.int64)),
        top.reshape(n_users, min(kmax, n_items)),
        positives.indices.astype(np.int64),
    )


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def _frame(
    dataset: PreparedDataset,
    per_user: bool,
    users: np.ndarray,
    ranks: M.PositiveRanks,
    pos_items: np.ndarray,
    item_users: np.ndarray,
    user_items: np.ndarray,
    per_list: dict[str, torch.Tensor],
) -> pl.DataFrame:
    li = ranks.list_index.numpy()
    positives = pl.DataFrame(
        {
            "list": li,
            "item_idx": pos_items.astype(np.int32),
            "item_id": dataset.item_ids[pos_items],
            "rank": pl.Series(ranks.expected_rank.numpy()).fill_nan(None),
            "unseen": (item_users[pos_items] == 0),
        }
    )
    if per_user:  # one list per user, holding all of its positives
        positives = positives.group_by("list", maintain_order=True).agg(
            pl.col("item_idx"),
            pl.col("item_id"),
            pl.col("rank"),
            pl.col("unseen").sum().alias("n_unseen_positives"),
        )
    else:
        positives = positives.with_columns(
            pl.col("unseen").cast(pl.Int64).alias("n_unseen_positives")
        )
        positives = positives.drop("unseen")
    head = pl.DataFrame(
        {
            "list": np.arange(len(users)),
            "user_idx": users.astype(np.int32),
            "user_id": dataset.user_ids[users],
            "user_has_history": user_items[users] > 0,
        }
    )
    body = pl.DataFrame({k: v.cpu().numpy() for k, v in per_list.items()})
    return (
        head.join(positives, on="list", how="left", maintain_order="left").drop("list").hstack(body)
    )


def write_lists(results: list[EvalResult], out_dir: Path) -> list[str]:
    """Write each result's per-list parquet (``lists-{split}-{protocol}.parquet``, what paired
    significance tests read) into ``out_dir``; returns the file names."""
    files = []
    for r in results:
        name = f"lists-{r.split}-{r.protocol}.parquet"
        buf = io.BytesIO()
        r.lists.write_parquet(buf)
        atomic_write_bytes(Path(out_dir) / name, buf.getvalue())
        files.append(name)
    return files


def write_results(results: list[EvalResult], out_dir: Path, provenance: dict) -> dict[str, float]:
    """Write ``metrics.json`` (all results' metrics, flat), per-list parquet files and
    ``evaluation.json`` (provenance: model, protocol settings, dataset, candidate files)."""
    out_dir = Path(out_dir)
    merged = {k: v for r in results for k, v in r.metrics.items()}
    files = write_lists(results, out_dir)
    atomic_write_json(out_dir / "metrics.json", merged)
    atomic_write_json(
        out_dir / "evaluation.json", {**provenance, "metrics": merged, "lists": files}
    )
    return merged
