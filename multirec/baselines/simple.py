"""The two reference points every table needs: a random ranker and global popularity."""

from __future__ import annotations

import numpy as np
import torch

from multirec.data.dataset import PreparedDataset
from multirec.models.base import Recommender, Validation

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_ITEM = np.uint64(0xC2B2AE3D27D4EB4F)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (wrapping uint64 arithmetic): a fast, well-mixed integer hash."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class RandomRecommender(Recommender):
    """Uniform random scores, a pure function of ``(seed, user, item)``.

    Hashing instead of drawing from a stream makes a score independent of batching and of
    whether it came from :meth:`score` or :meth:`score_all`; the same seed gives the same
    ranking on every call and in every process.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    @property
    def name(self) -> str:
        return "Random"

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        """Nothing to learn."""

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = users.cpu().numpy().astype(np.uint64)[:, None]
        i = items.cpu().numpy().astype(np.uint64)
        seed = _splitmix64(np.array([self.seed], dtype=np.uint64))
        h = _splitmix64(_splitmix64(seed ^ (u * _GOLDEN)) ^ (i * _MIX_ITEM))
        return torch.from_numpy((h >> np.uint64(40)).astype(np.float32) / float(1 << 24))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        items = torch.arange(self.fitted_on.n_items).expand(len(users), -1)
        return self.score(users, items)


class MostPopular(Recommender):
    """Score = number of distinct users who interacted with the item in *training*.

    Validation and test interactions are never counted (counting them leaks the answer).
    Items with equal counts are tied; the metrics treat ties in expectation.
    """

    @property
    def name(self) -> str:
        return "MostPopular"

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        train = dataset.interaction_matrix("train")
        self.counts = torch.from_numpy(np.asarray(train.sum(axis=0)).ravel().astype(np.float32))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.counts[items.cpu()]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(users), -1).clone()
