"""The one interface every recommender answers: baselines and the neural model alike.

The evaluator (:mod:`multirec.eval.evaluator`) only ever calls this interface, so a new model
is evaluated exactly like every other one, on the same saved candidates, by implementing:

* :meth:`Recommender._fit` -- learn from ``dataset.train`` (never from validation or test);
* :meth:`Recommender.score` -- scores for given (user, candidate items) lists;
* optionally :meth:`Recommender.score_all` -- a vectorised full-catalogue scorer (the default
  builds it from :meth:`score` in item chunks).

:meth:`Recommender.recommend` (top-k, seen items excluded) is implemented once, here.

A recommender remembers which prepared dataset it was fitted on (:class:`DatasetSignature`),
so evaluating it against another one is refused with the difference named instead of
silently producing meaningless numbers (indices would refer to other users and items).
A model fitted outside :meth:`fit` (e.g. by a Lightning ``Trainer``) calls :meth:`bind` with
the dataset, and stores :attr:`fitted_on` in its checkpoint (``DatasetSignature.to_dict``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch

from multirec.data.dataset import PreparedDataset
from multirec.errors import ArtefactMismatchError, MultirecError

Validation = Callable[["Recommender"], float]
"""Validation score of a model as it stands (higher is better), built by :mod:`multirec.eval`."""


@dataclass(frozen=True)
class DatasetSignature:
    """Identity of the prepared dataset a model was fitted on."""

    fingerprint: str
    n_users: int
    n_items: int

    @classmethod
    def of(cls, dataset: PreparedDataset) -> DatasetSignature:
        return cls(dataset.fingerprint, dataset.n_users, dataset.n_items)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DatasetSignature:
        return cls(str(d["fingerprint"]), int(d["n_users"]), int(d["n_items"]))


class Recommender(ABC):
    """Fit on a prepared dataset's training split; score (user, item) pairs, higher = better.

    Scores must be finite floats (the evaluator refuses NaN and infinities rather than
    guessing). They may be returned on any device; the evaluator computes metrics there.
    Ties are allowed: the metrics treat tied items in expectation over a random order
    (see :mod:`multirec.eval.metrics`), so a constant scorer scores like a random one.
    """

    fitted_on: DatasetSignature | None = None
    # Whether items without training interactions get scores of their own (from content).
    # An id-only model ties them all, so under protocol=cold_items it ranks like Random;
    # the evaluator says so rather than print those figures as if it had learnt something.
    scores_cold_items: bool = False

    @property
    def name(self) -> str:
        """Label used in tables and provenance."""
        return type(self).__name__

    # -- fitting -------------------------------------------------------------------
    def fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> Recommender:
        """Learn from ``dataset.train`` and remember which dataset that was.

        ``validation`` scores the model as it stands on the validation split (higher is
        better); iterative models use it for early stopping and model selection, others
        ignore it. It never sees test data.
        """
        self.bind(dataset)
        self._fit(dataset, validation)
        return self

    @abstractmethod
    def _fit(self, dataset: PreparedDataset, validation: Validation | None) -> None:
        """Model-specific training on ``dataset.train`` only."""

    def bind(self, dataset: PreparedDataset) -> None:
        """Record ``dataset`` as the one this model is fitted on (sizes its index space)."""
        self.fitted_on = DatasetSignature.of(dataset)

    def check_dataset(self, dataset: PreparedDataset) -> None:
        """Refuse a dataset other than the one this model was fitted on, naming the difference."""
        if self.fitted_on is None:
            raise MultirecError(f"{self.name} has not been fitted; call .fit(dataset) first")
        theirs = DatasetSignature.of(dataset)
        if theirs != self.fitted_on:
            diffs = [
                f"{k}: fitted on {getattr(self.fitted_on, k)}, given {getattr(theirs, k)}"
                for k in ("fingerprint", "n_users", "n_items")
                if getattr(self.fitted_on, k) != getattr(theirs, k)
            ]
            raise ArtefactMismatchError(
                f"{self.name} was fitted on another prepared dataset than {dataset.root} "
                f"({'; '.join(diffs)}); refit it on this dataset or evaluate on the one it was fitted on"
            )

    # -- scoring -------------------------------------------------------------------
    @abstractmethod
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of ``items[b, c]`` for ``users[b]``: LongTensor[B], LongTensor[B, C] -> [B, C]."""

    def score_all(self, users: torch.Tensor, item_chunk: int = 8192) -> torch.Tensor:
        """Scores of every item for ``users``: LongTensor[B] -> Tensor[B, n_items].

        The default calls :meth:`score` on chunks of the catalogue; models with a cheaper
        vectorised form (a matrix product, a sparse product) override it.
        """
        if self.fitted_on is None:
            raise MultirecError(f"{self.name} has not been fitted; call .fit(dataset) first")
        n_items = self.fitted_on.n_items
        chunks = []
        for start in range(0, n_items, item_chunk):
            items = torch.arange(start, min(start + item_chunk, n_items), device=users.device)
            chunks.append(self.score(users, items.expand(len(users), -1)))
        return torch.cat(chunks, dim=1)

    def recommend(
        self, users: torch.Tensor, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items and their scores per user, ``exclude[user]`` items removed.

        ``exclude`` is a user x item CSR matrix (typically ``dataset.interaction_matrix()``,
        the training items). Where fewer than ``k`` items remain, the tail is padded with
        excluded items whose score is ``-inf``.
        """
        scores = self.score_all(users)
        if exclude is not None:
            mask_excluded(scores, exclude, users.cpu().numpy())
        top = torch.topk(scores, k=min(k, scores.shape[1]), dim=1)
        return top.indices, top.values


def mask_excluded(scores: torch.Tensor, exclude: sp.csr_matrix, users: np.ndarray) -> None:
    """Set ``scores[b, i] = -inf`` in place for every item ``i`` in row ``users[b]`` of ``exclude``."""
    rows = exclude[users]
    if rows.nnz == 0:
        return
    r = np.repeat(np.arange(len(users)), np.diff(rows.indptr))
    dev = scores.device
    scores[torch.from_numpy(r).to(dev), torch.from_numpy(rows.indices.astype(np.int64)).to(dev)] = (
        float("-inf")
    )
