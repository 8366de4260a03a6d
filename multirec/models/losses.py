"""Training objectives, chosen by the ``loss`` config group.

Each loss takes the positive logits ``[B]``, negative logits ``[B, K]`` and a mask ``valid``
``[B, K]`` (False where a column is no negative for that row: one of the user's own training
items met among negatives shared by the batch). The contrastive term also takes the projected
visual and text embeddings of the batch's items -- the very projections the recommender fuses,
so aligning them changes its scores.

Which negatives fill the ``K`` columns is the loss's setting too, read by the model:

* ``share_negatives``: every negative drawn in the batch is a negative of every positive in it
  (``B x`` as many negatives per positive for one matrix product; ``model.scoring=two_tower``);
* ``in_batch``: the batch's other positives are negatives too. They are drawn in proportion to
  popularity, so with ``logq`` every logit is corrected by the log of its item's expected
  count among the negatives (Yi et al., RecSys 2019), which keeps the softmax estimating the
  full one instead of punishing popular items.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from multirec.errors import ConfigError


class RankingLoss(nn.Module):
    """Base of the objectives: which negatives they see, and whether they are logQ-corrected."""

    needs_alignment = False

    def __init__(
        self, share_negatives: bool = False, in_batch: bool = False, logq: bool = False
    ) -> None:
        super().__init__()
        self.share_negatives = share_negatives
        self.in_batch = in_batch
        self.logq = logq

    def forward(
        self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor | None = None, **_: object
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return values.mean()
    return (values * valid).sum() / valid.sum().clamp(min=1)


class BCELoss(RankingLoss):
    """Binary cross-entropy: positives labelled 1, sampled negatives 0 (the paper).

    Positives and negatives weigh by count, as in the paper: each logit is one example.
    """

    def forward(
        self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor | None = None, **_: object
    ) -> dict[str, torch.Tensor]:
        if valid is None:
            logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
            labels = torch.zeros_like(logits)
            labels[:, 0] = 1.0
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        else:
            total = F.softplus(-pos).sum() + (F.softplus(neg) * valid).sum()
            loss = total / (len(pos) + valid.sum())
        return {"loss": loss, "bce": loss}


class BPRLoss(RankingLoss):
    """Bayesian personalised ranking: -log sigma(s_pos - s_neg), averaged over pairs."""

    def forward(
        self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor | None = None, **_: object
    ) -> dict[str, torch.Tensor]:
        loss = _masked_mean(-F.logsigmoid(pos.unsqueeze(1) - neg), valid)
        return {"loss": loss, "bpr": loss}


class SoftmaxLoss(RankingLoss):
    """Sampled softmax: cross-entropy of the positive among itself and its negatives, logits
    divided by ``temperature``. With many negatives it approximates the full softmax over the
    catalogue, which is what full ranking rewards."""

    def __init__(
        self,
        temperature: float = 1.0,
        share_negatives: bool = True,
        in_batch: bool = False,
        logq: bool = True,
    ) -> None:
        super().__init__(share_negatives, in_batch, logq)
        if temperature <= 0:
            raise ConfigError(f"loss.temperature={temperature} must be > 0")
        self.temperature = temperature

    def forward(
        self, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor | None = None, **_: object
    ) -> dict[str, torch.Tensor]:
        if valid is not None:
            neg = neg.masked_fill(~valid, float("-inf"))
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1) / self.temperature
        loss = torch.logsumexp(logits, dim=1).mean() - logits[:, 0].mean()
        return {"loss": loss, "softmax": loss}


class BCEContrastiveLoss(BCELoss):
    """(1 - alpha) * BCE + alpha * symmetric InfoNCE between visual and text projections.

    The temperature is learned in log space and clamped to [min_temperature,
    max_temperature] so it cannot run off to zero or infinity.
    """

    needs_alignment = True

    def __init__(
        self,
        alpha: float = 0.1,
        temperature: float = 0.07,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"loss.alpha={alpha} must lie in [0, 1]")
        self.alpha = alpha
        self.log_temp = nn.Parameter(torch.tensor(math.log(temperature)))
        self.log_min, self.log_max = math.log(min_temperature), math.log(max_temperature)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temp.clamp(self.log_min, self.log_max).exp()

    def forward(
        self,
        pos: torch.Tensor,
        neg: torch.Tensor,
        valid: torch.Tensor | None = None,
        visual: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        out = super().forward(pos, neg, valid)
        if visual is None or text is None or len(visual) < 2:
            raise ConfigError(
                "loss=bce_contrastive needs both a visual and a text encoder (encoder.*: none given)"
            )
        v = F.normalize(visual, dim=-1)
        t = F.normalize(text, dim=-1)
        logits = v @ t.T / self.temperature
        target = torch.arange(len(v), device=v.device)
        nce = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        out.update(
            loss=(1 - self.alpha) * out["bce"] + self.alpha * nce,
            infonce=nce,
            temperature=self.temperature.detach(),
        )
        return out
