"""Iterated k-core filtering.

Filtering items then users once (as an earlier implementation did) leaves users and
items below the threshold; this repeats until every remaining user and item has at
least ``k`` interactions, or nothing is left.
"""

from __future__ import annotations

import numpy as np


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Boolean mask of interactions kept by the k-core, and the number of rounds it took.

    ``users`` and ``items`` are integer codes (0..n-1) of equal length.
    """
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep, 0
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        rounds += 1
        ucount = np.bincount(users[keep], minlength=n_users)
        icount = np.bincount(items[keep], minlength=n_items)
        new_keep = keep & (ucount[users] >= k) & (icount[items] >= k)
        if new_keep.sum() == keep.sum():
            return keep, rounds
        keep = new_keep
