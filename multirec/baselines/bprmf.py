"""BPR-MF: matrix factorisation trained with Bayesian Personalized Ranking (Rendle et al., UAI 2009).

``x_ui = p_u . q_i + b_i``. For every training positive ``(u, i)`` and each of its sampled
negatives ``j``, LearnBPR's stochastic-gradient step on ``ln sigma(x_ui - x_uj)`` with L2
regularisation ``reg``:

    z = sigma(-(x_ui - x_uj))
    p_u += lr (z (q_i - q_j) - reg p_u)
    q_i += lr (z p_u - reg q_i);    q_j += lr (-z p_u - reg q_j)
    b_i += lr (z - reg b_i);        b_j += lr (-z - reg b_j)

Rendle et al. apply it one bootstrapped triple at a time; here every positive is visited once
per epoch in shuffled mini-batches whose triples are computed together and applied with
``index_add_`` (updates of a row repeated in a batch add up) -- no autograd, no optimiser
state, a few vectorised tensor operations per batch. Negatives come from
:class:`multirec.data.negatives.NegativeSampler`, the sampler the neural model uses, redrawn
every epoch.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from multirec.data.dataset import PreparedDataset
from multirec.data.negatives import NegativeSampler
from multirec.errors import ConfigError
from multirec.models.base import Recommender, Validation

log = logging.getLogger(__name__)


class BPRMF(Recommender):
    """Latent-factor model trained by mini-batched LearnBPR steps on CPU."""

    def __init__(
        self,
        factors: int = 64,
        epochs: int = 60,
        lr: float = 0.05,
        reg: float = 0.05,
        batch_size: int = 8192,
        n_negatives: int = 1,
        negative_strategy: str = "uniform",
        seed: int = 0,
    ) -> None:
        if negative_strategy not in ("uniform", "popularity"):
            raise ConfigError(
                f"baseline.negative_strategy {negative_strategy!r} unusable for BPR-MF, which has no "
                "content features; valid: uniform, popularity"
            )
        for key, value in (
            ("factors", factors),
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("n_negatives", n_negatives),
        ):
            if value < 1:
                raise ConfigError(f"baseline.{key} must be >= 1, got {value}")
        self.factors = int(factors)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.reg = float(reg)
        self.batch_size = int(batch_size)
        self.n_negatives = int(n_negatives)
        self.negative_strategy = negative_strategy
        self.seed = int(seed)
        self.epoch_losses: list[float] = []

    @property
    def name(self) -> str:
        return "BPR-MF"

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        p = torch.randn(dataset.n_users, self.factors, generator=gen) * 0.1
        q = torch.randn(dataset.n_items, self.factors, generator=gen) * 0.1
        b = torch.zeros(dataset.n_items)
        sampler = NegativeSampler(
            dataset.interaction_matrix("train"), self.n_negatives, self.negative_strategy, self.seed
        )
        train = dataset.train
        all_users = torch.from_numpy(train.users)
        all_items = torch.from_numpy(train.items)
        lr, reg = self.lr, self.reg
        self.epoch_losses = []
        for epoch in range(self.epochs):
            negatives = torch.from_numpy(sampler.sample(train.users, train.items, epoch))
            order = torch.from_numpy(
                np.random.default_rng([self.seed, epoch]).permutation(len(train))
            )
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                u, i, j = all_users[idx], all_items[idx], negatives[idx]  # j: [B, N]
                pu, qi, qj = p[u], q[i], q[j]
                x = ((pu * qi).sum(-1) + b[i])[:, None] - (pu[:, None, :] * qj).sum(-1) - b[j]
                z = torch.sigmoid(-x)  # d(-log sigma(x))/dx = -z
                total += float(torch.nn.functional.softplus(-x).sum())  # -log sigma(x)
                # Rendle's LearnBPR update for every triple, applied together (duplicates add up)
                p.index_add_(0, u, lr * ((z[:, :, None] * (qi[:, None, :] - qj)).sum(1) - reg * pu))
                q.index_add_(0, i, lr * (z.sum(1, keepdim=True) * pu - reg * qi))
                q.index_add_(
                    0,
                    j.flatten(),
                    lr * (-(z[:, :, None] * pu[:, None, :]) - reg * qj).flatten(0, 1),
                )
                b.index_add_(0, i, lr * (z.sum(1) - reg * b[i]))
                b.index_add_(0, j.flatten(), lr * (-z - reg * b[j]).flatten())
            self.epoch_losses.append(total / (len(order) * self.n_negatives))
            log.info(
                "BPR-MF epoch %d/%d: BPR loss %.4f", epoch + 1, self.epochs, self.epoch_losses[-1]
            )
        self.user_factors, self.item_factors, self.item_bias = p, q, b

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users, items = users.cpu(), items.cpu()
        pu = self.user_factors[users]
        return torch.einsum("bf,bcf->bc", pu, self.item_factors[items]) + self.item_bias[items]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.item_bias, self.user_factors[users.cpu()], self.item_factors.T)
