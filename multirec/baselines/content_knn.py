"""ContentKNN: items scored by how close their content is to the user's training items.

The baseline for items nobody has interacted with: collaborative models (BPR-MF, ItemKNN,
UserKNN, MostPopular) know such an item only by its id, which training never saw, while its
cover and text exist from the start. Similarity is cosine in content space: each modality's
features L2-normalised, concatenated with equal weight (an item missing one modality keeps the
other's half). Neighbours are drawn from items with training interactions only -- the only
ones a history can contain -- and each item keeps its ``k`` nearest (target neighbourhood):

    score(u, i) = sum_{j in train(u), j among the k nearest to i} cos(i, j)

so a cold item is scored by the user's items that resemble it, exactly like a warm one.
Scoring is one sparse product per batch of users, like ItemKNN.

The features come from the encoder caches the neural model uses: pass ``items``
(:class:`~multirec.models.items.ItemInputs`) or an ``encoder`` config node and ``cache_dir``,
from which :meth:`fit` loads them (extracting any missing cache on CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError, DataError
from multirec.models.base import Recommender, Validation
from multirec.models.items import ItemInputs

MODALITIES = ("visual", "text")


def content_vectors(items: ItemInputs, modalities: list[str]) -> torch.Tensor:
    """Unit-norm content vector per item (float32 [n_items, d]): each modality normalised,
    zero where its features are missing, the halves weighted equally."""
    parts = []
    for m in modalities:
        feats = getattr(items, m)
        if feats is None:
            continue
        x = torch.nn.functional.normalize(feats.float(), dim=1)
        parts.append(x * getattr(items, f"{m}_ok").unsqueeze(1))
    if not parts:
        raise ConfigError(
            f"content_knn has no content features ({', '.join(modalities)} requested, none "
            "extracted); choose an encoder with a visual or text side"
        )
    return torch.cat(parts, dim=1) / len(parts) ** 0.5


def nearest_seen(
    vectors: torch.Tensor, seen: np.ndarray, k: int, block: int = 2048
) -> sp.csr_matrix:
    """``[n_items, n_items]``: row ``i`` holds the cosine similarities of the ``k`` items
    with training interactions nearest to ``i`` (never ``i`` itself; non-positive ones dropped).
    Computed ``block`` rows at a time, so memory stays ``block x n_seen``."""
    n = len(vectors)
    cand = np.flatnonzero(seen)
    k = min(k, len(cand))
    pool = vectors[torch.from_numpy(cand)]
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        sim = vectors[start : start + block] @ pool.T
        own = np.flatnonzero((cand >= start) & (cand < start + len(sim)))
        sim[torch.from_numpy(cand[own] - start), torch.from_numpy(own)] = float("-inf")
        top = torch.topk(sim, k, dim=1)
        keep = (top.values > 0).numpy()
        r = np.repeat(np.arange(start, start + len(sim)), k).reshape(-1, k)
        rows.append(r[keep])
        cols.append(cand[top.indices.numpy()][keep])
        vals.append(top.values.numpy()[keep])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


class ContentKNN(Recommender):
    """See the module docstring."""

    scores_cold_items = True

    def __init__(
        self,
        k: int = 50,
        modalities: list[str] | tuple[str, ...] = MODALITIES,
        encoder: dict[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        items: ItemInputs | None = None,
        block: int = 2048,
    ) -> None:
        if k < 1:
            raise ConfigError(f"baseline.k must be >= 1, got {k}")
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown or not modalities:
            raise ConfigError(
                f"baseline.modalities={list(modalities)} must name some of: {', '.join(MODALITIES)}"
            )
        if items is None and (encoder is None or cache_dir is None):
            raise ConfigError(
                "content_knn needs item features: pass items=, or encoder= and cache_dir="
            )
        self.k = int(k)
        self.modalities = list(modalities)
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.items = items
        self.block = int(block)

    @property
    def name(self) -> str:
        return "ContentKNN"

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        if self.items is None:
            from multirec.features.extraction import cached_features  # the encoder stack is heavy

            sides, _ = cached_features(dataset, self.encoder, self.cache_dir)
            self.items = ItemInputs.of(dataset, sides)
        if len(self.items.tag) != dataset.n_items:
            raise DataError(
                f"content_knn was given features of {len(self.items.tag)} items for a dataset "
                f"of {dataset.n_items}; extract them for this dataset"
            )
        self.train = dataset.interaction_matrix("train")
        vectors = content_vectors(self.items, self.modalities)
        self.right = nearest_seen(vectors, dataset.seen_items(), self.k, self.block).T.tocsr()

    def _product(self, users: torch.Tensor) -> np.ndarray:
        """Dense scores ``[B, n_items]`` of ``users``."""
        rows = self.train[users.cpu().numpy()]
        return (rows @ self.right).toarray().astype(np.float32, copy=False)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users, items = users.cpu(), items.cpu()
        rows = max(1, (1 << 22) // self.train.shape[1])  # bounds the dense block per step
        return torch.cat(
            [
                torch.gather(
                    torch.from_numpy(self._product(users[s : s + rows])), 1, items[s : s + rows]
                )
                for s in range(0, len(users), rows)
            ]
        )

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._product(users))
