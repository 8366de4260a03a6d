"""Content seen through prototypes: an item's features as a soft assignment to K prototypes.

An MLP over raw encoder features can tell every item apart, so on sparse interactions it
learns item-specific detail that does not generalise -- content then acts as one more id.
A prototype projection keeps only which of K learned prototypes (cosine similarity, a
learned temperature) an item's features are near, then maps that assignment to a token: an
information bottleneck of K soft categories. The prototypes start as spherical k-means
centroids of the catalogue's own features (no labels), so the categories the content forms
by itself are there from the first step, and training moves them where interactions ask.

A user's profile on the same side is the mean of their history's assignments (their share
of each category), which the user tower maps to a token as items' are: per step, over the
batch users' histories, so a training positive can be left out of its own user's profile.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from multirec.errors import ConfigError

KMEANS_ITERATIONS = 25
KMEANS_ROWS = 16_384  # catalogue rows k-means runs on: ample for tens of prototypes
START_SCALE = 20.0  # cosine-similarity temperature at start: near one-hot for a clear nearest


class PrototypeProjection(nn.Module):
    """``[n, in_dim]`` features -> ``[n, dim]`` tokens through ``k`` prototypes."""

    def __init__(self, in_dim: int, k: int, dim: int) -> None:
        super().__init__()
        self.centroids = nn.Parameter(torch.randn(k, in_dim) / math.sqrt(in_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(START_SCALE)))
        self.out = nn.Linear(k, dim)
        # set once the centroids come from the catalogue; saved, so a loaded model keeps its own
        self.register_buffer("initialised", torch.tensor(False))

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Soft assignment ``[n, k]`` (rows sum to 1) of each feature row to the prototypes."""
        # the rows' norms divide the [n, k] products, not the [n, in_dim] features: k << in_dim
        dots = x @ nn.functional.normalize(self.centroids, dim=1).T
        cos = dots / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return torch.softmax(self.log_scale.exp() * cos, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.assign(x))

    @torch.no_grad()
    def initialise(self, feats: torch.Tensor, valid: torch.Tensor) -> None:
        """Spherical k-means of the catalogue's features ``feats`` (rows where ``valid``) as
        the centroids. It runs on at most ``KMEANS_ROWS`` of those rows, drawn with torch's
        generator (the run's seed), so its memory stays bounded whatever the catalogue; it
        starts from ``k`` of them (distinct unless there are fewer, when some prototypes
        start as copies), and an empty cluster keeps its previous centroid. Does nothing
        once done."""
        if bool(self.initialised):
            return
        rows = valid.nonzero().squeeze(1)
        if not len(rows):
            raise ConfigError(
                "model.prototypes needs items with valid features to start from; set it to 0"
            )
        rows = rows[torch.randperm(len(rows))[:KMEANS_ROWS]]
        x = nn.functional.normalize(feats[rows].float(), dim=1)
        k = self.centroids.shape[0]
        c = x[torch.randperm(max(len(x), k)) % len(x)][:k].clone()
        for _ in range(KMEANS_ITERATIONS):
            nearest = (x @ c.T).argmax(dim=1)
            sums = torch.zeros_like(c).index_add_(0, nearest, x)
            filled = torch.bincount(nearest, minlength=k) > 0
            c[filled] = nn.functional.normalize(sums[filled], dim=1)
        self.centroids.copy_(c.to(self.centroids))
        self.initialised.fill_(True)
