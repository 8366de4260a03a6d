"""Train/validation/test splits, seeded and deterministic.

- ``random``: per user, a seeded shuffle cut 70/15/15 (the paper). Each share is
  rounded, and the training share keeps at least one interaction.
- ``leave_one_out``: per user by timestamp, last = test, second-to-last = validation
  (PixelRec's benchmark). Ties in time are broken by a seeded random key.
- ``temporal``: a global time cut at the 70 % and 85 % quantiles of timestamps.
- ``cold_items``: whole items held out (strict cold start): a seeded share ``ratios[1]`` of the
  items has all its interactions in validation, ``ratios[2]`` in test, the rest in training.

All four return a split label per interaction (0 train, 1 valid, 2 test). Held-out
interactions of users with no training interaction are dropped (label -1) and counted
by the caller, so every evaluated user has a history.
"""

from __future__ import annotations

import numpy as np

from multirec.errors import ConfigError

TRAIN, VALID, TEST, DROPPED = 0, 1, 2, -1
STRATEGIES = ("random", "leave_one_out", "temporal", "cold_items")


def _rank_within_user(users: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows visited in ``order`` (grouped by user), each row's position and its user's size."""
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    pos_sorted = np.arange(len(order)) - np.repeat(starts, sizes)
    rank = np.empty(len(order), dtype=np.int64)
    size = np.empty(len(order), dtype=np.int64)
    rank[order] = pos_sorted
    size[order] = np.repeat(sizes, sizes)
    return rank, size


def cold_item_labels(items: np.ndarray, ratios: list[float], seed: int) -> np.ndarray:
    """``cold_items``: the label of each interaction is its item's, drawn per item.

    Validation and test items never occur in training, so every held-out positive is an
    item that only content can score (``protocol=cold_items`` lists them); the shares count
    items, not interactions.
    """
    items = np.asarray(items, dtype=np.int64)
    n_items = int(items.max()) + 1 if len(items) else 0
    order = np.random.default_rng(seed).permutation(n_items)
    n_valid = int(np.floor(n_items * ratios[1] + 0.5))
    n_test = int(np.floor(n_items * ratios[2] + 0.5))
    per_item = np.full(n_items, TRAIN, dtype=np.int8)
    per_item[order[:n_valid]] = VALID
    per_item[order[n_valid : n_valid + n_test]] = TEST
    return per_item[items]


def split_labels(
    users: np.ndarray,
    timestamps: np.ndarray,
    strategy: str,
    ratios: list[float],
    seed: int,
    items: np.ndarray | None = None,
) -> np.ndarray:
    """Split label per interaction; ``items`` (item index per interaction, which
    ``cold_items`` splits by) is needed by that strategy only."""
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"data.split.strategy={strategy!r} is unknown; valid: {', '.join(STRATEGIES)}"
        )
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(
            f"data.split.ratios={list(ratios)} must be three non-negative shares summing to 1"
        )
    rng = np.random.default_rng(seed)
    key = rng.random(len(users))
    labels = np.full(len(users), TRAIN, dtype=np.int8)
    if strategy == "cold_items":
        labels = cold_item_labels(items, ratios, seed)
    elif strategy == "temporal":
        t1, t2 = np.quantile(timestamps, [ratios[0], ratios[0] + ratios[1]])
        labels[timestamps >= t1] = VALID
        labels[timestamps >= t2] = TEST
    else:
        if strategy == "random":
            order = np.lexsort((key, users))
        else:  # leave_one_out: chronological within user, ties broken by the seeded key
            order = np.lexsort((key, timestamps, users))
        rank, size = _rank_within_user(users, order)
        if strategy == "random":
            n_test = np.floor(size * ratios[2] + 0.5).astype(np.int64)
            n_valid = np.floor(size * ratios[1] + 0.5).astype(np.int64)
            n_valid = np.minimum(n_valid, np.maximum(size - n_test - 1, 0))
            n_test = np.minimum(n_test, size - 1)
            n_train = size - n_valid - n_test
            labels[(rank >= n_train) & (rank < n_train + n_valid)] = VALID
            labels[rank >= n_train + n_valid] = TEST
        else:
            labels[(rank == size - 1) & (size >= 3)] = TEST
            labels[(rank == size - 2) & (size >= 3)] = VALID
    has_train = np.zeros(int(users.max()) + 1 if len(users) else 0, dtype=bool)
    has_train[users[labels == TRAIN]] = True
    labels[(labels != TRAIN) & ~has_train[users]] = DROPPED
    return labels
