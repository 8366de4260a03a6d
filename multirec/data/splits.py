"""Train/validation/test splits, seeded and deterministic.

- ``random``: per user, a seeded shuffle cut 70/15/15 (the paper). Each share is
  rounded, and the training share keeps at least one interaction.
- ``leave_one_out``: per user by timestamp, last = test, second-to-last = validation
  (PixelRec's benchmark). Ties in time are broken by a seeded random key.
- ``temporal``: a global time cut at the 70 % and 85 % quantiles of timestamps.

All three return a split label per interaction (0 train, 1 valid, 2 test). Held-out
interactions of users with no training interaction are dropped (label -1) and counted
by the caller, so every evaluated user has a history.
"""

from __future__ import annotations

import numpy as np

from multirec.errors import ConfigError

TRAIN, VALID, TEST, DROPPED = 0, 1, 2, -1
STRATEGIES = ("random", "leave_one_out", "temporal")


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


def split_labels(
    users: np.ndarray, timestamps: np.ndarray, strategy: str, ratios: list[float], seed: int
) -> np.ndarray:
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
    if strategy == "temporal":
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
