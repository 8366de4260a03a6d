"""Graphs of the graph-based models (LightGCN, FREEDOM): built once, propagated with sparse products.

* :func:`bipartite_adjacency` -- the symmetric-normalised user-item graph ``D^-1/2 A D^-1/2``
  of LightGCN (He et al., SIGIR 2020, eq. 7), users first, then items;
* :func:`propagate` -- LightGCN's layer combination: the mean of ``A^l E`` over ``l = 0..L``
  (eq. 8 with ``alpha_l = 1 / (L + 1)``);
* :func:`knn_graph` -- FREEDOM's frozen item-item graph of one modality (Zhou & Shen, MM 2023,
  section 3.1): top-k cosine neighbours per item, normalised ``D^-1/2 S D^-1/2``;
* :func:`sample_edges` -- FREEDOM's degree-sensitive edge pruning (section 3.2): edges kept
  with probability proportional to ``1 / sqrt(d_u d_i)``, drawn without replacement.

Graphs are torch sparse COO tensors, so the same code runs on CPU and GPU and gradients
flow through :func:`propagate` into the layer-0 embeddings.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch


def edges(train_matrix: sp.spmatrix) -> tuple[torch.Tensor, torch.Tensor]:
    """(users, items) of every distinct training interaction, as int64 tensors."""
    coo = sp.csr_matrix(train_matrix).tocoo()  # csr sums duplicates: one edge per pair
    return torch.from_numpy(coo.row.astype("int64")), torch.from_numpy(coo.col.astype("int64"))


def square(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Coalesced sparse ``[n, n]`` matrix; the callers build indices within range."""
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n, n), check_invariants=False
    ).coalesce()


def edge_weights(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int
) -> torch.Tensor:
    """``1 / sqrt(d_u d_i)`` per edge, degrees counted over the given edges."""
    du = torch.bincount(users, minlength=n_users).float()
    di = torch.bincount(items, minlength=n_items).float()
    return (du[users] * di[items]).rsqrt()  # every endpoint of an edge has degree >= 1


def bipartite_adjacency(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int
) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` over ``n_users + n_items`` nodes, for the edges ``(users[e], items[e])``.

    Nodes without edges get an empty row, so their propagated embedding is their own
    layer-0 embedding scaled by ``1 / (L + 1)``.
    """
    w = edge_weights(users, items, n_users, n_items)
    n = n_users + n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    return square(rows, cols, torch.cat([w, w]), n)


def propagate(adj: torch.Tensor, ego: torch.Tensor, layers: int) -> torch.Tensor:
    """Mean of ``adj^l @ ego`` over ``l = 0..layers`` (LightGCN eq. 8)."""
    total, h = ego, ego
    for _ in range(layers):
        h = torch.sparse.mm(adj, h)
        total = total + h
    return total / (layers + 1)


def knn_graph(features: torch.Tensor, ok: torch.Tensor, k: int, block: int = 1024) -> torch.Tensor:
    """FREEDOM's item-item graph of one modality: ``[n_items, n_items]``, sparse.

    Row ``i`` links item ``i`` to its ``k`` most cosine-similar items (itself included, as
    ``S_ii = 1`` is the largest similarity), each weighted ``1 / sqrt(d_i d_j)`` with ``d`` the
    row degrees (section 3.1). Items without a valid feature (``ok`` false) neither have nor are
    neighbours. Similarities are computed in row blocks, so memory stays ``block x n_items``.
    """
    n = features.shape[0]
    valid = torch.nonzero(ok).flatten()
    k = min(k, len(valid))
    if k == 0:
        empty = torch.zeros(0, dtype=torch.long, device=features.device)
        return square(empty, empty, torch.zeros(0, device=features.device), n)
    x = torch.nn.functional.normalize(features[valid].float(), dim=1)
    neighbours = torch.cat(
        [torch.topk(x[s : s + block] @ x.T, k, dim=1).indices for s in range(0, len(valid), block)]
    )
    rows = valid.repeat_interleave(k)
    cols = valid[neighbours.flatten()]
    degree = torch.bincount(rows, minlength=n).float()
    w = (degree[rows] * degree[cols]).rsqrt()
    return square(rows, cols, w, n)


def sample_edges(weights: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of ``keep`` edges drawn without replacement, with probability proportional to
    ``weights`` (Efraimidis & Spirakis: the largest ``log(u) / w``, ``u`` uniform)."""
    keys = torch.rand(weights.shape, device=weights.device).log() / weights
    return torch.topk(keys, keep).indices
