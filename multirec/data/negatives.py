"""Training negatives: N per training positive, redrawn every epoch, never a training positive.

Shared by BPR-MF (:mod:`multirec.baselines.bprmf`) and the neural model's datamodule, so both
learn from the same kind of negatives. Everything is vectorised: candidates are drawn for all
positives at once and rejected entries (the user's own training items) are redrawn in bulk,
with membership checked by binary search in the sorted ``user * n_items + item`` keys of the
training matrix.

Held-out (validation/test) items may be drawn as training negatives: training must not know
which items are held out, so excluding them would leak the answer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from multirec.errors import ConfigError, DataError

Strategy = Literal["uniform", "popularity", "content"]
STRATEGIES = ("uniform", "popularity", "content")


class InteractionSet:
    """Vectorised membership test for (user, item) pairs of a user x item CSR matrix."""

    def __init__(self, matrix: sp.csr_matrix) -> None:
        matrix = sp.csr_matrix(matrix)
        matrix.sum_duplicates()  # canonical: sorted, unique column indices per row
        self.n_items = matrix.shape[1]
        rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
        self.keys = rows * self.n_items + matrix.indices.astype(np.int64)  # sorted, by construction
        self.row_counts = np.diff(matrix.indptr)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean array shaped like ``items``: is ``(users[..., None], items)`` in the set?"""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        q = users.reshape(users.shape + (1,) * (items.ndim - users.ndim)) * self.n_items + items
        if len(self.keys) == 0:
            return np.zeros(q.shape, dtype=bool)
        pos = np.searchsorted(self.keys, q)
        return self.keys[np.minimum(pos, len(self.keys) - 1)] == q


class NegativeSampler:
    """Draw ``num_negatives`` items per training positive, seeded per epoch.

    Strategies:

    * ``uniform`` -- every item equally likely.
    * ``popularity`` -- item ``j`` with probability proportional to ``count_j ** popularity_exponent``
      (training counts; items never seen in training are then never drawn).
    * ``content`` -- hard negatives: each slot is, with probability ``hard_fraction``, an item
      among the ``hard_candidates`` most content-similar items to the positive (cosine on
      ``item_features``), otherwise uniform. A hard slot whose neighbours are all the user's own
      items falls back to uniform after a few redraws.

    ``sample(users, items, epoch)`` depends only on ``(seed, epoch)`` and the inputs: the same
    epoch gives the same negatives, the next epoch new ones.
    """

    _MAX_REDRAWS = 64

    def __init__(
        self,
        train: sp.csr_matrix,
        num_negatives: int = 1,
        negatives: Strategy = "uniform",
        seed: int = 0,
        *,
        popularity_exponent: float = 0.75,
        item_features: np.ndarray | torch.Tensor | None = None,
        hard_candidates: int = 100,
        hard_fraction: float = 0.5,
    ) -> None:
        if negatives not in STRATEGIES:
            raise ConfigError(f"negatives={negatives!r} unknown; valid: {', '.join(STRATEGIES)}")
        if num_negatives < 1:
            raise ConfigError(f"num_negatives must be >= 1, got {num_negatives}")
        self.n_users, self.n_items = train.shape
        self.positives = InteractionSet(train)
        full = np.flatnonzero(self.positives.row_counts >= self.n_items)
        if len(full):
            raise DataError(
                f"user index {full[0]} interacted with all {self.n_items} items in training: "
                "no negative exists for it; remove such users before training"
            )
        self.num_negatives = num_negatives
        self.negatives = negatives
        self.seed = seed
        self.hard_fraction = hard_fraction
        self._cdf: np.ndarray | None = None
        self._neighbours: np.ndarray | None = None
        if negatives == "popularity":
            counts = np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float64)
            weights = counts**popularity_exponent
            self._cdf = np.cumsum(weights / weights.sum())
        elif negatives == "content":
            if item_features is None:
                raise ConfigError("negatives='content' needs item_features (n_items x d)")
            if not 0.0 <= hard_fraction <= 1.0:
                raise ConfigError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
            self._neighbours = content_neighbours(
                item_features, min(hard_candidates, self.n_items - 1)
            )

    def sample(self, users: np.ndarray, items: np.ndarray, epoch: int) -> np.ndarray:
        """Negatives for the positives ``(users[p], items[p])``: int64 array [P, num_negatives]."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch])
        shape = (len(users), self.num_negatives)
        out = self._propose(rng, shape)
        hard = np.zeros(shape, dtype=bool)
        if self._neighbours is not None:
            hard = rng.random(shape) < self.hard_fraction
            out[hard] = self._hard(rng, np.broadcast_to(items[:, None], shape)[hard])
        rows = np.arange(len(users))
        for round_ in range(self._MAX_REDRAWS + 1):
            bad = self.positives.contains(users[rows], out[rows])
            if not bad.any():
                break
            any_bad = bad.any(axis=1)
            rows, bad = rows[any_bad], bad[any_bad]
            r, c = np.nonzero(bad)
            # hard slots whose neighbours keep being the user's own items fall back to uniform
            redraw_hard = hard[rows[r], c] & (round_ < self._MAX_REDRAWS // 2)
            fresh = self._propose(rng, (len(r),))
            if redraw_hard.any():
                fresh[redraw_hard] = self._hard(rng, items[rows[r[redraw_hard]]])
            out[rows[r], c] = fresh
        else:
            raise DataError(
                f"could not draw negatives for user index {users[rows[0]]} after "
                f"{self._MAX_REDRAWS} rounds (negatives={self.negatives!r}): it interacted with "
                "nearly every item that sampling can draw"
            )
        return out

    def draw_probabilities(self) -> np.ndarray | None:
        """Probability of each item per draw before rejection (float64 [n_items]), which a
        logQ-corrected loss needs; None for ``content``, whose hard slots have none."""
        if self._neighbours is not None:
            return None
        if self._cdf is not None:
            return np.diff(self._cdf, prepend=0.0)
        return np.full(self.n_items, 1.0 / self.n_items)

    def _propose(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self._cdf is not None:
            idx = np.searchsorted(self._cdf, rng.random(shape), side="right")
            return np.minimum(idx, self.n_items - 1).astype(np.int64)
        return rng.integers(0, self.n_items, size=shape, dtype=np.int64)

    def _hard(self, rng: np.random.Generator, positives: np.ndarray) -> np.ndarray:
        nb = self._neighbours
        return nb[positives, rng.integers(0, nb.shape[1], size=len(positives))]


def content_neighbours(
    features: np.ndarray | torch.Tensor, k: int, block: int = 2048
) -> np.ndarray:
    """Indices of each item's ``k`` most cosine-similar other items: int64 [n_items, k].

    Computed block by block (``block`` rows at a time) so memory stays
    ``block x n_items`` whatever the catalogue size.
    """
    f = torch.as_tensor(features, dtype=torch.float32)
    f = torch.nn.functional.normalize(f, dim=1)
    out = torch.empty((f.shape[0], k), dtype=torch.int64)
    for start in range(0, f.shape[0], block):
        sim = f[start : start + block] @ f.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = float("-inf")  # an item is not its own negative
        out[start : start + block] = torch.topk(sim, k, dim=1).indices
    return out.numpy()
