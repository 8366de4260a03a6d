"""Training objectives, chosen by the ``loss`` config group.

Each loss takes the positive logits ``[B]``, negative logits ``[B, N]`` and, for the
contrastive term, the projected visual and text embeddings of the batch's items --
the very projections the recommender fuses, so aligning them changes its scores (an
earlier implementation aligned separate heads that never reached the score).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from multirec.errors import ConfigError


class BCELoss(nn.Module):
    """Binary cross-entropy: positives labelled 1, sampled negatives 0 (the paper)."""

    needs_alignment = False

    def forward(
        self, pos: torch.Tensor, neg: torch.Tensor, **_: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return {"loss": loss, "bce": loss}


class BPRLoss(nn.Module):
    """Bayesian personalised ranking: -log sigma(s_pos - s_neg), averaged over pairs."""

    needs_alignment = False

    def forward(
        self, pos: torch.Tensor, neg: torch.Tensor, **_: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        loss = -F.logsigmoid(pos.unsqueeze(1) - neg).mean()
        return {"loss": loss, "bpr": loss}


class BCEContrastiveLoss(nn.Module):
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
        self.bce = BCELoss()
        self.log_temp = nn.Parameter(torch.tensor(math.log(temperature)))
        self.log_min, self.log_max = math.log(min_temperature), math.log(max_temperature)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temp.clamp(self.log_min, self.log_max).exp()

    def forward(
        self,
        pos: torch.Tensor,
        neg: torch.Tensor,
        visual: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        out = self.bce(pos, neg)
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
