"""Ranking and beyond-accuracy metrics, vectorised in torch (any device).

**Lists.** A list is what one ranking is judged on: in the sampled protocols, one held-out
positive and its negatives; in full ranking, one user's whole catalogue (training items
masked) with all of that user's held-out positives. Every metric is computed per list and
then averaged over lists, so a user with several held-out positives counts once in full
ranking (Recall@K = hits / #positives, NDCG@K with the ideal DCG of min(#positives, K)).

**Ties** are handled in expectation over a uniformly random order of tied items (McSherry &
Najork, ECIR 2008): a positive with ``above`` items scored strictly higher and ``tied`` other
items with exactly its score occupies each rank ``above + 1 ... above + tied + 1`` with equal
probability. The result is deterministic, never rewards a model for ties (a constant scorer
gets exactly the random ranker's expectation, e.g. Recall@10 = 10/21 on 21-item lists) and
never depends on where the positive is stored in a list. The reported ``rank`` of a positive
is its expected rank ``above + 1 + tied / 2``.

**Definitions** (rank ``r`` is 1-based; ``P`` the list's positives):

* ``recall@K`` = #{p in P : r_p <= K} / |P|
* ``ndcg@K`` = sum_{p in P, r_p <= K} 1/log2(r_p + 1) / sum_{r=1}^{min(|P|,K)} 1/log2(r + 1)
* ``hitrate@K`` = 1 if some positive has r_p <= K
* ``mrr@K`` = 1 / min_p r_p if that is <= K, else 0 (truncated; the paper's MRR is mrr@10)
* ``novelty@K`` = mean over the top-K items i of log2((N + 1) / (c_i + 1)) / log2(N + 1),
  where c_i is the number of *training* users of item i and N the number of users with
  training interactions: normalised self-information (Zhou et al., PNAS 2010) with add-one
  smoothing, in [0, 1] -- 1 for an item nobody used in training, 0 for one every user used.
* ``coverage@K`` = |union of all top-K lists| / n_items (aggregate catalogue coverage).
* ``ils@K`` = mean over the top-K list's item pairs of their content similarity: cosine of
  the caller's item feature vectors, or for categorical features (one integer per item,
  e.g. tags) 1 when two items share a category other than 0 ("unknown/rare"), else 0.

The top-K list used by the beyond-accuracy metrics breaks ties by item index (lowest first)
for candidate lists; in full ranking it is ``torch.topk`` over the masked catalogue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

ACCURACY = ("recall", "ndcg", "hitrate", "mrr")


@dataclass(frozen=True)
class PositiveRanks:
    """Where each held-out positive landed: ``list_index[p]`` names its list (0 .. n_lists-1).

    Counts are exact for positives within the top ``depth`` scores of their list; for a
    positive below (``beyond``), ``above`` is only the lower bound ``depth`` and ``tied`` 0 --
    which gives every metric at K <= depth its exact value (zero).
    """

    list_index: torch.Tensor  # long [P]
    above: torch.Tensor  # long [P]: items of the list scored strictly higher (positives included)
    tied: torch.Tensor  # long [P]: other items of the list with exactly the same score
    beyond: torch.Tensor  # bool [P]: positive ranked below the depth counted exactly
    n_lists: int

    @property
    def expected_rank(self) -> torch.Tensor:
        """Expected 1-based rank over random orders of tied items; NaN when ``beyond``."""
        rank = self.above.double() + 1.0 + self.tied.double() / 2.0
        return torch.where(self.beyond, torch.nan, rank)


def rank_positives(
    scores: torch.Tensor,
    top_values: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``above``, ``tied`` and ``beyond`` (see :class:`PositiveRanks`) for the positives at
    ``scores[rows[p], cols[p]]``, given each row's ``top_values`` (its ``depth`` largest
    scores, descending).

    Only the top ``depth`` positions of a ranking matter to metrics at K <= depth, and every
    item scored above a positive inside them is among them, so the counts come from
    ``top_values``; a full pass over a row is needed only for a positive tied with the row's
    depth-th score (its tie group may extend below). A pass over the whole catalogue per
    positive would cost far more than scoring itself. Masked items (``-inf``) are never above
    or tied with a finite score.
    """
    depth = top_values.shape[1]
    v = scores[rows, cols]
    top = top_values[rows]
    kth = top[:, -1]
    beyond = v < kth
    above = torch.where(beyond, depth, (top > v[:, None]).sum(dim=1))
    tied = torch.where(beyond, 0, (top == v[:, None]).sum(dim=1) - 1)
    edge = torch.nonzero(~beyond & (v == kth)).flatten()
    for start in range(0, len(edge), chunk):
        e = edge[start : start + chunk]
        tied[e] = (scores[rows[e]] == v[e, None]).sum(dim=1) - 1
    return above, tied, beyond


def _cumulative(f: torch.Tensor) -> torch.Tensor:
    """F[n] = f[1] + ... + f[n] for n = 0 .. len(f) (f indexed by rank from 1)."""
    return torch.cat([f.new_zeros(1), torch.cumsum(f, 0)])


def _expected_per_positive(
    cum: torch.Tensor, above: torch.Tensor, tied: torch.Tensor
) -> torch.Tensor:
    """E[f(r)] for r uniform on above+1 .. above+tied+1, f zero beyond len(cum)-1."""
    k = len(cum) - 1
    hi = torch.clamp(above + tied + 1, max=k)
    lo = torch.clamp(above, max=k)
    return (cum[hi] - cum[lo]) / (tied + 1).double()


def accuracy_metrics(
    ranks: PositiveRanks, n_relevant: torch.Tensor, ks: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Per-list ``recall@K``, ``ndcg@K``, ``hitrate@K``, ``mrr@K`` (float64 [n_lists]) for K in ``ks``.

    ``n_relevant[l]`` is the number of positives of list ``l`` (>= 1; it normalises recall
    and the ideal DCG).
    """
    dev = ranks.above.device
    li, above, tied = ranks.list_index, ranks.above, ranks.tied
    n_rel = n_relevant.to(dev).double()
    kmax = max(ks)
    r = torch.arange(1, kmax + 1, device=dev, dtype=torch.float64)
    disc = 1.0 / torch.log2(r + 1.0)

    # First relevant item, for hitrate and mrr: the best positives sit `best` items down,
    # in a tie group with `m` positives and `n_neg` other items, randomly ordered.
    best = torch.full((ranks.n_lists,), torch.iinfo(torch.long).max, device=dev)
    best = best.scatter_reduce(0, li, above, reduce="amin")
    is_best = above == best[li]
    m = torch.zeros(ranks.n_lists, device=dev, dtype=torch.float64).index_add_(
        0, li, is_best.double()
    )
    group = torch.zeros(ranks.n_lists, device=dev, dtype=torch.long)
    group = group.scatter_reduce(0, li[is_best], tied[is_best] + 1, reduce="amax")
    n_neg = (group.double() - m).clamp(min=0.0)
    # P(X = x) for X = other items placed before the first positive in its tie group.
    survive = torch.ones_like(m)
    first = []  # (rank, probability) for x = 0 .. kmax-1
    for x in range(kmax):
        nxt = survive * (n_neg - x).clamp(min=0.0) / (n_neg + m - x).clamp(min=1.0)
        first.append((best.double() + 1.0 + x, survive - nxt))
        survive = nxt

    out: dict[str, torch.Tensor] = {}
    for k in ks:
        f_hit = (r <= k).double()
        hits = _expected_per_positive(_cumulative(f_hit), above, tied)
        dcg = _expected_per_positive(_cumulative(disc * f_hit), above, tied)
        ideal = _cumulative(disc * f_hit)[torch.clamp(n_rel.long(), max=k)]
        zeros = torch.zeros(ranks.n_lists, device=dev, dtype=torch.float64)
        out[f"recall@{k}"] = zeros.index_add(0, li, hits) / n_rel
        out[f"ndcg@{k}"] = zeros.index_add(0, li, dcg) / ideal
        out[f"hitrate@{k}"] = sum(p * (rk <= k) for rk, p in first)
        out[f"mrr@{k}"] = sum(p * (rk <= k) / rk for rk, p in first)
    return out


def novelty_weights(item_train_users: np.ndarray, n_train_users: int) -> torch.Tensor:
    """Per-item novelty log2((N+1)/(c+1)) / log2(N+1) from *training* user counts c (float64)."""
    c = torch.as_tensor(item_train_users, dtype=torch.float64)
    n = float(max(n_train_users, 1))
    return torch.log2((n + 1.0) / (c + 1.0)) / math.log2(n + 1.0)


def top_k_of_candidates(items: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-``k`` item ids of candidate lists, ties broken by item index (lowest first)."""
    by_item = torch.argsort(items, dim=1)
    items = torch.gather(items, 1, by_item)
    scores = torch.gather(scores, 1, by_item)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(items, 1, order)


def novelty(top: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean novelty weight of each top-K list: [L, K] -> [L]."""
    return weights.to(top.device)[top].mean(dim=1)


def coverage(top: torch.Tensor, n_items: int) -> float:
    """Share of the catalogue appearing in at least one top-K list."""
    return torch.unique(top).numel() / n_items


def intra_list_similarity(top: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mean pairwise content similarity within each top-K list (K >= 2): [L, K] -> [L].

    ``features`` is either float [n_items, d] (cosine similarity) or integer [n_items]
    categories (1 if equal and not 0, else 0).
    """
    k = top.shape[1]
    pairs = k * (k - 1) / 2
    if features.ndim == 1 and not features.is_floating_point():
        cat = features.to(top.device)[top]
        same = (cat[:, :, None] == cat[:, None, :]) & (cat[:, :, None] != 0)
        same = same & ~torch.eye(k, dtype=torch.bool, device=top.device)
        return same.sum(dim=(1, 2)).double() / (2 * pairs)
    e = torch.nn.functional.normalize(features.to(top.device).float(), dim=1)[top].double()
    total = e.sum(dim=1).pow(2).sum(dim=1) - e.pow(2).sum(dim=(1, 2))
    return total / (2 * pairs)
