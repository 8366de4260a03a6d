"""Evaluation candidate lists: drawn once from a fixed seed, saved, reused by every model.

A list is one held-out positive (column 0) followed by negatives drawn uniformly, without
repetition, from a pool of items the user never interacted with in *any* split. Lists are
saved under ``dataset.candidates_dir`` as ``{split}-{protocol}-{key}.npz`` where ``key`` is a
fingerprint of the dataset fingerprint, the split and the protocol's sampling settings; a
second run (any model, any process) loads the same file, so every model and baseline is
scored on identical candidates. All randomness comes from :func:`numpy.random.default_rng`
seeded with integers -- never Python's salted ``hash()``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from multirec.data.dataset import PreparedDataset
from multirec.data.negatives import InteractionSet
from multirec.errors import ArtefactMismatchError, DataError
from multirec.io import atomic_write_bytes, fingerprint

FORMAT_VERSION = 1
_MAX_REDRAWS = 64


@dataclass(frozen=True)
class CandidateLists:
    """``items[l, 0]`` is the held-out positive of list ``l`` for ``users[l]``; the rest negatives."""

    users: np.ndarray  # int64 [L]
    items: np.ndarray  # int64 [L, 1 + num_negatives]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.users)


def select_users(eligible: np.ndarray, n_users: int, fraction: float, seed: int) -> np.ndarray:
    """The ``eligible`` users inside one seeded random ``fraction`` of *all* users (sorted).

    The share is drawn over the whole population (a seeded permutation, first
    ``round(fraction * n_users)`` users), so validation and test evaluate the same random
    users wherever they have held-out positives; about ``fraction`` of the eligible users are
    chosen, and at least one when any is eligible.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"user_fraction must be in (0, 1], got {fraction}")
    eligible = np.unique(eligible).astype(np.int64)
    if len(eligible) == 0:
        return eligible
    priority = np.random.default_rng(seed).permutation(n_users)
    chosen = eligible[priority[eligible] < round(fraction * n_users)]
    return chosen if len(chosen) else eligible[[np.argmin(priority[eligible])]]


def draw_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    pool: np.ndarray,
    num_negatives: int,
    interacted: sp.csr_matrix,
    user_ids: np.ndarray,
) -> np.ndarray:
    """``num_negatives`` distinct items per row from ``pool``, none in the row user's ``interacted``.

    Vectorised rejection sampling; the rare rows still rejected after many rounds (users who
    interacted with nearly the whole pool) are completed exactly. A user with fewer than
    ``num_negatives`` eligible items is an error naming the user (``user_ids`` maps indices to ids).
    """
    users = np.asarray(users, dtype=np.int64)
    pool = np.asarray(pool, dtype=np.int64)
    in_pool = np.zeros(interacted.shape[1], dtype=np.float32)
    in_pool[pool] = 1.0
    uniq = np.unique(users)
    available = len(pool) - (interacted[uniq] @ in_pool).astype(np.int64)
    short = available < num_negatives
    if short.any():
        u = uniq[np.argmax(short)]
        raise DataError(
            f"user {user_ids[u]} has only {available[np.argmax(short)]} items it never interacted "
            f"with in the candidate pool of {len(pool)} items, fewer than the {num_negatives} "
            "negatives asked for; lower the protocol's num_negatives"
        )
    seen = InteractionSet(interacted)
    out = pool[rng.integers(0, len(pool), size=(len(users), num_negatives))]
    rows = np.arange(len(users))
    for _ in range(_MAX_REDRAWS):
        bad = seen.contains(users[rows], out[rows]) | _repeats(out[rows])
        any_bad = bad.any(axis=1)
        if not any_bad.any():
            return out
        rows, bad = rows[any_bad], bad[any_bad]
        r, c = np.nonzero(bad)
        out[rows[r], c] = pool[rng.integers(0, len(pool), size=len(r))]
    bad = seen.contains(users[rows], out[rows]) | _repeats(out[rows])
    for row, row_bad in zip(rows, bad, strict=True):  # only users owning nearly all of the pool
        taken = np.concatenate([interacted[users[row]].indices, out[row][~row_bad]])
        free = np.setdiff1d(pool, taken)
        out[row, row_bad] = rng.choice(free, size=int(row_bad.sum()), replace=False)
    return out


def _repeats(a: np.ndarray) -> np.ndarray:
    """Mask of entries equal to an earlier entry of the same row."""
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    dup_sorted = np.zeros_like(a, dtype=bool)
    dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
    out = np.zeros_like(dup_sorted)
    np.put_along_axis(out, order, dup_sorted, axis=1)
    return out


def candidates_path(dataset: PreparedDataset, split: str, protocol: str, settings: dict) -> Path:
    """Where the lists for (dataset, split, protocol settings) live; the name is content-keyed."""
    key = fingerprint(
        {
            "dataset": dataset.fingerprint,
            "split": split,
            "protocol": protocol,
            "settings": settings,
            "format": FORMAT_VERSION,
        }
    )
    return dataset.candidates_dir / f"{split}-{protocol}-{key[:16]}.npz"


def load_or_draw(
    dataset: PreparedDataset,
    split: str,
    protocol: str,
    settings: dict,
    draw: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> CandidateLists:
    """Load the saved lists for these settings, or ``draw()`` them once and save them atomically."""
    path = candidates_path(dataset, split, protocol, settings)
    meta = {
        "dataset": dataset.fingerprint,
        "split": split,
        "protocol": protocol,
        "settings": settings,
        "format": FORMAT_VERSION,
    }
    if path.is_file():
        return _load(path, meta)
    users, items = draw()
    buf = io.BytesIO()
    np.savez(
        buf,
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise DataError(
            f"cannot save evaluation candidates to {path} ({exc}); make {dataset.root} writable "
            "(the lists must be saved so that every model is scored on the same ones)"
        ) from exc
    return CandidateLists(users.astype(np.int64), items.astype(np.int64), path)


def _load(path: Path, meta: dict) -> CandidateLists:
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["meta"]))
            users, items = z["users"], z["items"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path} is unreadable ({exc}); delete it to draw the candidates again"
        ) from exc
    if stored != json.loads(json.dumps(meta, sort_keys=True)):
        raise ArtefactMismatchError(
            f"{path} was drawn for other settings ({stored}) than requested ({meta}); delete it"
        )
    return CandidateLists(users, items, path)
