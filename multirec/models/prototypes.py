"""Content seen through prototypes: an item's features as a soft assignment to K prototypes.

An MLP over raw encoder features can tell every item apart, so on sparse interactions it
learns item-specific detail that does not generalise -- content then acts as one more id.
A prototype projection keeps only which of K learned prototypes (cosine similarity, a
learned temperature) an item's features are near, then maps that assignment to a token: an
information bottleneck of K soft categories. The prototypes start as spherical k-means
centroids of the catalogue's own features (no labels), so the categories the content forms
by itself are there from the first step, and training moves them where interactions ask.

With both encoders the prototypes are, by default, one set over cover and text together
(``model.joint_prototypes``; each feature of unit length, side by side): an item then has
one category from both. Per side, a vague title puts its item in a category of vague
titles, which every user shares a little of, so such items rank low for everyone and the
cover's agreement, added on top, cannot lift them back; and where title and cover agree,
two sides count one piece of evidence twice.

Content alone cannot place an item whose title is vague and whose cover misleads. With
``model.audience`` (two-tower) an item's assignment also hears who chose it: its logits plus
a learned weight times the mean log taste of its training users, a posterior with the
content as the prior. The tastes are evidence, not a path for gradients; a training
positive's own user is left out of its audience, and an item without training interactions
(or whose id training drops) keeps its content's assignment.

A user's profile on the same side is the mean of their history's assignments (their share
of each category), which the user tower maps to a token as items' are: per step, over the
batch users' histories, so a training positive can be left out of its own user's profile.

The two-tower model's agreement on a prototype side is a topic mixture, as in an aspect
model: ``P(i | u) ~ sum_k theta_uk w_k q_ik``, with ``q_i`` the item's assignment and
``theta_u`` the user's smoothed share of each prototype. For near one-hot ``q_i`` its log
equals ``q_i . log(w * theta_u + floor)`` (Jensen's bound, tight there), which is a dot product
of an item vector and a user vector: full ranking stays one matrix product. The log matters:
a user's minor category is then ranked a constant factor below their main one and a category
they never chose far below both, which a dot product of linear maps of ``theta`` and ``q``
cannot express.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from multirec.errors import ConfigError

KMEANS_ITERATIONS = 25
KMEANS_RESTARTS = 4
KMEANS_ROWS = 16_384  # catalogue rows k-means runs on: ample for tens of prototypes
START_SCALE = 20.0  # cosine-similarity temperature at start: near one-hot for a clear nearest
START_SMOOTHING = 0.1  # pseudo-count per prototype added to a user's history (learned)
START_FLOOR = 0.05  # P(i | u) floor outside the user's categories, in w units (learned)
# features wider than this are seen through their leading principal directions: the
# categories live there, and a training step assigns every history item of its batch, so
# gathering and multiplying 128 columns instead of 1,280 is most of the step's cost
BASIS_DIM = 128


class PrototypeProjection(nn.Module):
    """``[n, in_dim]`` features -> ``[n, dim]`` tokens through ``k`` prototypes.

    :meth:`reduce` maps features onto at most ``BASIS_DIM`` leading principal directions of
    the catalogue (found at the start, saved with the model); :meth:`assign` and the
    centroids work on reduced rows.
    """

    def __init__(self, in_dim: int, k: int, dim: int) -> None:
        super().__init__()
        width = min(in_dim, BASIS_DIM)
        self.register_buffer("basis", torch.eye(in_dim)[:, :width].contiguous())
        self.centroids = nn.Parameter(torch.randn(k, width) / math.sqrt(width))
        self.log_scale = nn.Parameter(torch.tensor(math.log(START_SCALE)))
        self.out = nn.Linear(k, dim)
        # the topic mixture's weights, smoothing and floor, in log space so they stay positive
        self.log_weight = nn.Parameter(torch.zeros(k))
        self.log_smoothing = nn.Parameter(torch.tensor(math.log(START_SMOOTHING)))
        self.log_floor = nn.Parameter(torch.tensor(math.log(START_FLOOR)))
        self.log_strength = nn.Parameter(torch.zeros(()))
        # set once the centroids come from the catalogue; saved, so a loaded model keeps its own
        self.register_buffer("initialised", torch.tensor(False))

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Feature rows ``[n, in_dim]`` on the basis: ``[n, width]``."""
        return x @ self.basis

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, k]``: each reduced row's scaled cosine similarity to the prototypes, the
        log of its assignment up to a constant per row."""
        # the rows' norms divide the [n, k] products, not the [n, width] rows: k << width
        dots = x @ nn.functional.normalize(self.centroids, dim=1).T
        cos = dots / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return self.log_scale.exp() * cos

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Soft assignment ``[n, k]`` (rows sum to 1) of each reduced row to the prototypes."""
        return torch.softmax(self.logits(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.assign(self.reduce(x)))

    def log_taste(self, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """``[n, k]`` user side of the topic mixture, ``log(w * theta + floor)``, from the sum
        ``total [n, k]`` of a user's history assignments over ``count [n, 1]`` items; the
        smoothing keeps a short history from ruling a category out."""
        s = self.log_smoothing.exp()
        theta = (total + s) / (count + s * total.shape[1])
        taste = torch.log(theta * self.log_weight.exp() + self.log_floor.exp())
        return taste * self.log_strength.exp()

    @torch.no_grad()
    def initialise(
        self, rows_of: Callable[[torch.Tensor], torch.Tensor], valid: torch.Tensor
    ) -> None:
        """The basis (leading right singular vectors of the unit feature rows) and, on the
        reduced rows, spherical k-means of the catalogue's features (``rows_of(indices)``
        gives the rows of those items, of the ones where ``valid``) as the centroids. Both
        run on at most ``KMEANS_ROWS`` of those rows, drawn with torch's generator (the
        run's seed), so memory stays bounded whatever the catalogue; of
        ``KMEANS_RESTARTS`` k-means++ starts it keeps the tightest, since one unlucky start
        merges two categories and splits another, which training does not undo. With fewer
        rows than prototypes some start as copies. Does nothing once done."""
        if bool(self.initialised):
            return
        rows = valid.nonzero().squeeze(1)
        if not len(rows):
            raise ConfigError(
                "model.prototypes needs items with valid features to start from; set it to 0"
            )
        rows = rows[torch.randperm(len(rows))[:KMEANS_ROWS]]
        x = nn.functional.normalize(rows_of(rows).float().cpu(), dim=1)
        width = self.basis.shape[1]
        if width < x.shape[1]:
            # uncentred, as the cosine the prototypes compare by; fewer rows than columns
            # leave the trailing directions arbitrary but unused
            v = torch.linalg.svd(x, full_matrices=False).Vh[:width].T
            if v.shape[1] < width:
                v = torch.cat([v, v.new_zeros(v.shape[0], width - v.shape[1])], dim=1)
            self.basis.copy_(v)
            x = nn.functional.normalize(x @ self.basis, dim=1)
        k = self.centroids.shape[0]
        best, best_fit = None, -math.inf
        for _ in range(KMEANS_RESTARTS):
            c, fit = _spherical_kmeans(x, k)
            if fit > best_fit:
                best, best_fit = c, fit
        self.centroids.copy_(best.to(self.centroids))
        self.initialised.fill_(True)


def _spherical_kmeans(x: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    """Centroids ``[k, dim]`` of unit rows ``x`` from a k-means++ start, and their fit (the
    summed cosine similarity of each row to its nearest centroid); an empty cluster keeps
    its previous centroid."""
    c = x.new_empty(k, x.shape[1])
    c[0] = x[torch.randint(len(x), ())]
    gap = 1 - x @ c[0]
    for j in range(1, k):
        # the next start far from the chosen ones, in proportion to the squared distance
        weights = gap.clamp(min=0)
        pick = torch.multinomial(weights, 1) if weights.sum() > 0 else torch.randint(len(x), (1,))
        c[j] = x[pick.squeeze()]
        gap = torch.minimum(gap, 1 - x @ c[j])
    for _ in range(KMEANS_ITERATIONS):
        nearest = (x @ c.T).argmax(dim=1)
        sums = torch.zeros_like(c).index_add_(0, nearest, x)
        filled = torch.bincount(nearest, minlength=k) > 0
        c[filled] = nn.functional.normalize(sums[filled], dim=1)
    return c, float((x @ c.T).max(dim=1).values.sum())
