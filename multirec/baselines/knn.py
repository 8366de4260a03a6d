"""Neighbourhood baselines on the sparse training matrix: ItemKNN and UserKNN.

Similarity is shrunk cosine on binary interactions (Sarwar et al. 2001; shrinkage as in
Koren 2008):

    sim(a, b) = |a ∩ b| / (sqrt(|a|) * sqrt(|b|) + shrink)

where ``a``, ``b`` are the sets of users (ItemKNN) or items (UserKNN) of two rows. Only each
row's ``k`` most similar rows are kept (ties broken by lower index), so the model is a sparse
matrix ``S`` whose row ``r`` holds the ``k`` nearest neighbours ``N_k(r)`` of row ``r``.
Scores, with ``H(u)`` the user's training items and ``X`` the binary training matrix:

* ItemKNN, ``neighbourhood=target`` (Sarwar et al.'s prediction without its division by
  the summed similarities; RecBole's ItemKNN):
  ``score(u, i) = sum_{j in N_k(i) ∩ H(u)} sim(i, j)`` -- the scored item's ``k`` nearest
  items over the whole catalogue, of which those the user has count. As a product:
  ``X @ S.T``.
* ItemKNN, ``neighbourhood=history`` (Deshpande & Karypis 2004; implicit's
  ``ItemItemRecommender``): ``score(u, i) = sum_{j in H(u), i in N_k(j)} sim(j, i)`` -- each
  of the user's items votes for its own ``k`` nearest items. As a product: ``X @ S``.
* UserKNN: ``score(u, i) = sum_{v in N_k(u)} sim(u, v) * X[v, i]`` -- ``S[u] @ X``.

The two ItemKNN forms differ because ``S`` is not symmetric once truncated to ``k`` per row:
in the history form a popular item, among the ``k`` nearest of many items, collects votes
from all of them; in the target form every item is scored from its own ``k`` nearest only.

Similarities are computed block by block (``block`` rows at a time, top-k kept at once), so
memory stays bounded at Pixel1M size. Scoring is one sparse product per batch of users;
candidate scores are looked up in it without densifying.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import scipy.sparse as sp
import torch

from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError
from multirec.models.base import Recommender, Validation


def topk_cosine(rows: sp.csr_matrix, k: int, shrink: float, block: int = 4096) -> sp.csr_matrix:
    """Row-to-row shrunk cosine of a binary CSR matrix, keeping each row's top ``k`` (no self)."""
    n = rows.shape[0]
    rows = sp.csr_matrix(rows, dtype=np.float32)
    rows.data[:] = 1.0
    norms = np.sqrt(np.diff(rows.indptr).astype(np.float32))
    cols_t = rows.T.tocsr()
    parts_r, parts_c, parts_v = [], [], []
    for start in range(0, n, block):
        co = (rows[start : start + block] @ cols_t).tocoo()  # co-occurrence counts
        r, c = co.row.astype(np.int64), co.col.astype(np.int64)
        v = co.data / (norms[r + start] * norms[c] + shrink)
        keep = (c != r + start) & (v > 0)
        r, c, v = r[keep], c[keep], v[keep]
        order = np.lexsort((c, -v, r))  # by row, then similarity descending, then column
        r, c, v = r[order], c[order], v[order]
        first = np.searchsorted(r, r, side="left")
        top = np.arange(len(r)) - first < k
        parts_r.append(r[top] + start)
        parts_c.append(c[top])
        parts_v.append(v[top].astype(np.float32))
    return sp.csr_matrix(
        (np.concatenate(parts_v), (np.concatenate(parts_r), np.concatenate(parts_c))), shape=(n, n)
    )


class _NeighbourhoodModel(Recommender):
    """Scores are rows of ``left(users) @ right``, two sparse matrices set by ``_fit``."""

    def __init__(self, k: int = 100, shrink: float = 10.0, block: int = 4096) -> None:
        if k < 1:
            raise ConfigError(f"baseline.k must be >= 1, got {k}")
        if shrink < 0:
            raise ConfigError(f"baseline.shrink must be >= 0, got {shrink}")
        self.k = int(k)
        self.shrink = float(shrink)
        self.block = int(block)

    right: sp.csr_matrix

    @abstractmethod
    def _left(self, users: np.ndarray) -> sp.csr_matrix:
        """The users' rows of the left factor of the score product."""

    def _product(self, users: torch.Tensor) -> tuple[sp.csr_matrix, np.ndarray]:
        """Score rows of the distinct ``users`` (CSR, canonical) and each user's row in it."""
        uniq, row = np.unique(users.cpu().numpy(), return_inverse=True)
        prod = (self._left(uniq) @ self.right).tocsr()
        prod.sum_duplicates()
        return prod, row

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        prod, row = self._product(users)
        n_items = prod.shape[1]
        keys = np.repeat(np.arange(prod.shape[0], dtype=np.int64), np.diff(prod.indptr)) * n_items
        keys += prod.indices
        q = row.astype(np.int64)[:, None] * n_items + items.cpu().numpy()
        out = np.zeros(q.shape, dtype=np.float32)
        if len(keys):
            pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
            hit = keys[pos] == q
            out[hit] = prod.data[pos[hit]]
        return torch.from_numpy(out)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        prod, row = self._product(users)
        dense = prod.toarray().astype(np.float32, copy=False)
        if (
            len(row) != len(dense) or (row != np.arange(len(row))).any()
        ):  # repeated or unsorted users
            dense = dense[row]
        return torch.from_numpy(dense)


NEIGHBOURHOODS = ("target", "history")


class ItemKNN(_NeighbourhoodModel):
    """Item-based kNN: an item scores by its similarity to the user's training items.

    ``neighbourhood`` picks whose ``k`` nearest neighbours count (see the module docstring):
    the scored item's (``target``) or each history item's (``history``).
    """

    def __init__(
        self, k: int = 100, shrink: float = 10.0, block: int = 4096, neighbourhood: str = "target"
    ) -> None:
        super().__init__(k, shrink, block)
        if neighbourhood not in NEIGHBOURHOODS:
            raise ConfigError(
                f"baseline.neighbourhood {neighbourhood!r} unknown; valid: {', '.join(NEIGHBOURHOODS)}"
            )
        self.neighbourhood = neighbourhood

    @property
    def name(self) -> str:
        return "ItemKNN"

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        self.train = dataset.interaction_matrix("train")
        sim = topk_cosine(self.train.T.tocsr(), self.k, self.shrink, self.block)
        self.right = sim.T.tocsr() if self.neighbourhood == "target" else sim

    def _left(self, users: np.ndarray) -> sp.csr_matrix:
        return self.train[users]


class UserKNN(_NeighbourhoodModel):
    """User-based kNN: an item scores by the similarity of the neighbours who used it."""

    @property
    def name(self) -> str:
        return "UserKNN"

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        self.right = dataset.interaction_matrix("train")
        self.sim = topk_cosine(self.right, self.k, self.shrink, self.block)

    def _left(self, users: np.ndarray) -> sp.csr_matrix:
        return self.sim[users]
