"""Toy plug-ins defined outside the package: each is one class here plus one YAML under
``tests/plugin_conf/``, found through ``hydra.searchpath`` (see test_plugins.py)."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch
from torch import nn

from multirec.data.dataset import PreparedDataset
from multirec.eval.registry import Metric, RankingContext
from multirec.models.base import Recommender, Validation
from multirec.models.fusion import Fused, Fusion
from multirec.models.neural import NeuralRecommender, register


class MaxFusion(Fusion):
    """Element-wise maximum over the modality tokens."""

    def __init__(self, dim: int, n_tokens: int) -> None:
        super().__init__(dim, n_tokens, out_dim=dim)

    def forward(self, tokens: torch.Tensor) -> Fused:
        return tokens.max(dim=1).values, None


@register("toy_mf")
class ToyMF(NeuralRecommender):
    """Plain matrix factorisation trained with BPR on the shared training batches."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_tags: int = 0,
        n_numeric: int = 0,
        visual_dim: int = 0,
        text_dim: int = 0,
        dim: int = 8,
        lr: float = 0.05,
        provenance: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (self.user(users)[:, None, :] * self.item(items)).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.user(users) @ self.item.weight.T

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        users, pos, neg = batch
        u = self.user(users)
        diff = (u * self.item(pos)).sum(-1)[:, None] - (u[:, None, :] * self.item(neg)).sum(-1)
        return nn.functional.softplus(-diff).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class LowestIndexFirst(Recommender):
    """Ranks items by their index, lowest first: a deterministic, content-blind baseline."""

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        self.n_items = dataset.n_items

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return -items.double()

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return -torch.arange(self.n_items, dtype=torch.float64).expand(len(users), -1)


class MeanTopIndex(Metric):
    """Mean item index of the top-K list (a number only this test can predict)."""

    name = "meanidx"

    def __call__(self, ctx: RankingContext, k: int) -> torch.Tensor:
        return ctx.top[:, :k].double().mean(dim=1)


class KillAtStep(L.Callback):
    """Kills its own process with SIGKILL after training step ``step``: a crash at a random
    point, as far as the run can tell."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
