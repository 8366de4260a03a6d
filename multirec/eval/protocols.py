"""Evaluation protocols (config group ``protocol/``): which lists a model is judged on.

* :class:`SampledProtocol` (``protocol=sampled``, the paper's): for a seeded random share of the
  users with held-out positives, one list per (user, held-out positive) -- the positive plus
  ``num_negatives`` items drawn uniformly from the items the user never interacted with in any
  split. Drawn once and saved (:mod:`multirec.eval.candidates`).
* :class:`FullProtocol` (``protocol=full``): each evaluated user's held-out positives ranked
  against the whole catalogue, the user's training items masked (and validation items when
  testing). Sampled metrics can reverse the order of two models (Krichene & Rendle, KDD
  2020); full ranking cannot.
* :class:`ColdItemsProtocol` (``protocol=cold_items``): lists whose positive is an item with *no
  training interactions*, with negatives drawn from such cold items too by default (how well
  a model ranks new items among new items; it can only use content). With PixelRec's random
  per-user split cold items are rare (an item needs all its interactions held out); the lists
  exist whenever the prepared split produces them, and their count is reported.

Nothing is dropped silently: users without training history keep their lists (a model must
score them somehow) and every result reports how many such lists and how many positives
never seen in training it contains.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from multirec.data.dataset import SPLITS, PreparedDataset
from multirec.errors import ConfigError, DataError
from multirec.eval.candidates import CandidateLists, draw_negatives, load_or_draw, select_users

EVAL_SPLITS = ("valid", "test")


@dataclass(frozen=True)
class FullRankingTargets:
    """Row ``j`` of ``positives`` holds the held-out items of ``users[j]``; ``exclude`` is per user index."""

    users: np.ndarray  # int64 [U]
    positives: sp.csr_matrix  # [U, n_items]
    exclude: sp.csr_matrix  # [n_users, n_items], never containing a positive


class Protocol(ABC):
    """Builds (and caches per dataset and split) the lists a model is evaluated on."""

    name: ClassVar[str]

    def __init__(self, user_fraction: float, seed: int) -> None:
        if not 0.0 < user_fraction <= 1.0:
            raise ConfigError(f"protocol.user_fraction must be in (0, 1], got {user_fraction}")
        self.user_fraction = float(user_fraction)
        self.seed = int(seed)
        self._cache: dict[tuple[str, str], CandidateLists | FullRankingTargets] = {}

    def lists(self, dataset: PreparedDataset, split: str) -> CandidateLists | FullRankingTargets:
        """The lists for ``split`` (``valid`` or ``test``), built once per dataset and split."""
        if split not in EVAL_SPLITS:
            raise ConfigError(
                f"split {split!r} cannot be evaluated; valid: {', '.join(EVAL_SPLITS)}"
            )
        key = (dataset.fingerprint, split)
        if key not in self._cache:
            self._cache[key] = self._build(dataset, split)
        return self._cache[key]

    @abstractmethod
    def _build(self, dataset: PreparedDataset, split: str) -> CandidateLists | FullRankingTargets:
        """Construct the lists (no caching)."""


class SampledProtocol(Protocol):
    """One positive + ``num_negatives`` uniformly sampled never-interacted items per list."""

    name = "sampled"

    def __init__(
        self, num_negatives: int = 20, user_fraction: float = 0.3, seed: int = 2024
    ) -> None:
        super().__init__(user_fraction, seed)
        if num_negatives < 1:
            raise ConfigError(f"protocol.num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = int(num_negatives)

    def settings(self) -> dict:
        """What determines the drawn lists (part of their file name's fingerprint)."""
        return {
            "num_negatives": self.num_negatives,
            "user_fraction": self.user_fraction,
            "seed": self.seed,
        }

    def _held_out(self, dataset: PreparedDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Held-out (user, item) positives that may form a list."""
        part = dataset.split(split)
        return part.users, part.items

    def _pool(self, dataset: PreparedDataset) -> np.ndarray:
        """Items negatives are drawn from (before removing the user's own)."""
        return np.arange(dataset.n_items, dtype=np.int64)

    def _build(self, dataset: PreparedDataset, split: str) -> CandidateLists:
        def draw() -> tuple[np.ndarray, np.ndarray]:
            users, items = self._held_out(dataset, split)
            chosen = select_users(users, dataset.n_users, self.user_fraction, self.seed)
            keep = np.isin(users, chosen)
            users, items = users[keep], items[keep]
            order = np.lexsort((items, users))
            users, items = users[order], items[order]
            rng = np.random.default_rng([self.seed, SPLITS.index(split)])
            negatives = draw_negatives(
                rng,
                users,
                self._pool(dataset),
                self.num_negatives,
                dataset.interaction_matrix(*SPLITS),
                dataset.user_ids,
            )
            return users, np.concatenate([items[:, None], negatives], axis=1)

        return load_or_draw(dataset, split, self.name, self.settings(), draw)


def cold_items(dataset: PreparedDataset) -> np.ndarray:
    """Items with no training interaction (sorted indices)."""
    return np.flatnonzero(~dataset.seen_items())


class ColdItemsProtocol(SampledProtocol):
    """Sampled lists whose positive never occurs in training; negatives from ``negative_pool``."""

    name = "cold_items"

    def __init__(
        self,
        num_negatives: int = 20,
        user_fraction: float = 1.0,
        seed: int = 2024,
        negative_pool: Literal["cold", "all"] = "cold",
    ) -> None:
        super().__init__(num_negatives, user_fraction, seed)
        if negative_pool not in ("cold", "all"):
            raise ConfigError(
                f"protocol.negative_pool must be 'cold' or 'all', got {negative_pool!r}"
            )
        self.negative_pool = negative_pool

    def settings(self) -> dict:
        return {**super().settings(), "negative_pool": self.negative_pool}

    def _held_out(self, dataset: PreparedDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        users, items = super()._held_out(dataset, split)
        keep = np.isin(items, cold_items(dataset))
        if not keep.any():
            raise DataError(
                f"{dataset.root}: no {split} interaction has an item without training "
                "interactions, so the cold_items protocol has no lists; prepare the data with a "
                "split that holds out items"
            )
        return users[keep], items[keep]

    def _pool(self, dataset: PreparedDataset) -> np.ndarray:
        return cold_items(dataset) if self.negative_pool == "cold" else super()._pool(dataset)


class FullProtocol(Protocol):
    """Rank every item; training items (and validation items when testing) masked."""

    name = "full"

    def __init__(self, user_fraction: float = 1.0, seed: int = 2024) -> None:
        super().__init__(user_fraction, seed)

    def _build(self, dataset: PreparedDataset, split: str) -> FullRankingTargets:
        part = dataset.split(split)
        users = select_users(part.users, dataset.n_users, self.user_fraction, self.seed)
        held_out = dataset.interaction_matrix(split)
        seen = dataset.interaction_matrix(*SPLITS[: SPLITS.index(split)])
        exclude = (seen - seen.multiply(held_out)).tocsr()  # a positive is never masked
        exclude.eliminate_zeros()
        return FullRankingTargets(users, held_out[users], exclude)
