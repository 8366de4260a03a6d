"""BPR-MF: matrix factorisation trained with Bayesian Personalized Ranking (Rendle et al., UAI 2009).

``x_ui = p_u . q_i + b_i``. Each training positive ``(u, i)`` is paired with ``num_negatives``
sampled items ``j``; every triple contributes

    softplus(-(x_ui - x_uj)) + reg / 2 * (|p_u|^2 + |q_i|^2 + b_i^2 + |q_j|^2 + b_j^2)

(``-ln sigma`` of the score margin plus L2 on the rows it touches), averaged over the batch.
Every positive is visited once per epoch in shuffled mini-batches; negatives come from
:class:`multirec.data.negatives.NegativeSampler`, the sampler the neural model uses, redrawn
every epoch.

Optimisation is Adam (Kingma & Ba 2015) applied row-wise ("lazy" Adam, as
``torch.optim.SparseAdam``): a batch's gradient is computed in closed form, summed per
distinct user and item row, and only those rows' parameters and moment estimates move. A
batch touches a few thousand rows, so a step costs the same whatever the catalogue size,
with neither autograd nor a dense optimiser state update.

With a validation scorer (``fit(dataset, validation)``), training stops once the score has
not improved for ``patience`` consecutive validations and the best validation's factors are
kept; ``epochs`` then bounds the run. Without one, all ``epochs`` are trained.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from multirec.data.dataset import PreparedDataset
from multirec.data.negatives import NegativeSampler
from multirec.errors import ConfigError
from multirec.models.base import Recommender, Validation
from multirec.runtime.timing import progress

log = logging.getLogger(__name__)

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # Adam's usual moment decays and denominator guard


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on a single intra-op thread for the duration.

    A training batch's tensors are a few thousand rows: a second thread saves little there,
    and on a machine busy with other processes each parallel operation waits for a
    descheduled thread -- measured on 2 shared cores, an epoch took ~18x longer with two
    threads than with one. Validation (large matrix products) runs outside, multithreaded.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _RowAdam:
    """Adam state for one parameter table, updated only on the rows a batch touches."""

    def __init__(self, table: torch.Tensor, lr: float) -> None:
        self.table = table
        self.lr = lr
        self.m = torch.zeros_like(table)
        self.v = torch.zeros_like(table)

    def step(self, rows: torch.Tensor, grads: torch.Tensor, t: int) -> None:
        """Apply per-occurrence ``grads`` of ``rows`` (repeats are summed first) at step ``t``."""
        uniq, inverse = torch.unique(rows, return_inverse=True)
        g = torch.zeros(len(uniq), grads.shape[1], dtype=grads.dtype).index_add_(0, inverse, grads)
        m = self.m[uniq].mul_(BETA1).add_(g, alpha=1 - BETA1)
        v = self.v[uniq].mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
        self.m[uniq], self.v[uniq] = m, v
        step = m.div_(1 - BETA1**t).div_(v.div_(1 - BETA2**t).sqrt_().add_(EPS))
        self.table.index_add_(0, uniq, step, alpha=-self.lr)


def bpr_gradients(
    pu: torch.Tensor, qi: torch.Tensor, qj: torch.Tensor, reg: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss and its gradients for a batch of triples, the mean over all of them.

    ``pu``: user rows [B, F]; ``qi``: positive item rows [B, F + 1] and ``qj``: negative item
    rows [B, N, F + 1], each with the item bias as last column. Returns
    ``(loss, d/dpu [B, F], d/dqi [B, F + 1], d/dqj [B, N, F + 1])``.
    """
    b, n = qj.shape[:2]
    pt = torch.nn.functional.pad(pu, (0, 1), value=1.0)  # [p_u, 1] picks up the bias
    x = (pt * qi).sum(-1, keepdim=True) - torch.einsum("bf,bnf->bn", pt, qj)
    total = b * n
    loss = torch.nn.functional.softplus(-x).sum() / total
    loss += reg / 2 * (n * (pu.square().sum() + qi.square().sum()) + qj.square().sum()) / total
    gx = -torch.sigmoid(-x) / total  # d loss / d x, [B, N]
    g_pu = torch.einsum("bn,bnf->bf", gx, qi[:, None, :-1] - qj[..., :-1]) + (reg * n / total) * pu
    g_qi = gx.sum(1, keepdim=True) * pt + (reg * n / total) * qi
    g_qj = -gx[..., None] * pt[:, None, :] + (reg / total) * qj
    return loss, g_pu, g_qi, g_qj


class BPRMF(Recommender):
    """Latent-factor model trained by mini-batched BPR with row-wise Adam on CPU."""

    def __init__(
        self,
        factors: int = 64,
        epochs: int = 200,
        lr: float = 0.005,
        reg: float = 0.03,
        batch_size: int = 2048,
        num_negatives: int = 1,
        negatives: str = "uniform",
        patience: int = 10,
        validate_every: int = 1,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        if negatives not in ("uniform", "popularity"):
            raise ConfigError(
                f"baseline.negatives {negatives!r} unusable for BPR-MF, which has no "
                "content features; valid: uniform, popularity"
            )
        for key, value in (
            ("factors", factors),
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("num_negatives", num_negatives),
            ("patience", patience),
            ("validate_every", validate_every),
        ):
            if value < 1:
                raise ConfigError(f"baseline.{key} must be >= 1, got {value}")
        for key, value in (("lr", lr), ("init_std", init_std)):
            if value <= 0:
                raise ConfigError(f"baseline.{key} must be > 0, got {value}")
        if reg < 0:
            raise ConfigError(f"baseline.reg must be >= 0, got {reg}")
        self.factors = int(factors)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.reg = float(reg)
        self.batch_size = int(batch_size)
        self.num_negatives = int(num_negatives)
        self.negatives = negatives
        self.patience = int(patience)
        self.validate_every = int(validate_every)
        self.init_std = float(init_std)
        self.seed = int(seed)
        self.epoch_losses: list[float] = []
        self.validation_scores: dict[int, float] = {}  # epoch (1-based) -> validation score
        self.best_epoch: int | None = None

    @property
    def name(self) -> str:
        return "BPR-MF"

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        f = self.factors
        p = torch.randn(dataset.n_users, f, generator=gen) * self.init_std
        q = torch.randn(dataset.n_items, f + 1, generator=gen) * self.init_std
        q[:, f] = 0.0  # item biases start neutral
        p_opt, q_opt = _RowAdam(p, self.lr), _RowAdam(q, self.lr)
        sampler = NegativeSampler(
            dataset.interaction_matrix("train"), self.num_negatives, self.negatives, self.seed
        )
        train = dataset.train
        all_users = torch.from_numpy(train.users)
        all_items = torch.from_numpy(train.items)
        self.epoch_losses, self.validation_scores, self.best_epoch = [], {}, None
        best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        stale, t = 0, 0
        for epoch in progress(range(1, self.epochs + 1), "BPR-MF", "epoch"):
            negatives = torch.from_numpy(sampler.sample(train.users, train.items, epoch))
            order = torch.from_numpy(
                np.random.default_rng([self.seed, epoch]).permutation(len(train))
            )
            total = 0.0
            with _one_thread():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    u, i, j = all_users[idx], all_items[idx], negatives[idx]  # j: [B, N]
                    loss, g_pu, g_qi, g_qj = bpr_gradients(p[u], q[i], q[j], self.reg)
                    t += 1
                    p_opt.step(u, g_pu, t)
                    items = torch.cat([i, j.flatten()])
                    q_opt.step(items, torch.cat([g_qi, g_qj.flatten(0, 1)]), t)
                    total += float(loss) * len(idx)
            self.epoch_losses.append(total / len(order))
            log.debug("BPR-MF epoch %d/%d: loss %.4f", epoch, self.epochs, self.epoch_losses[-1])
            if validation is None or epoch % self.validate_every:
                continue
            self._publish(p, q)
            score = float(validation(self))
            self.validation_scores[epoch] = score
            log.debug("BPR-MF epoch %d: validation %.4f", epoch, score)
            if best is None or score > best[0]:
                best, stale, self.best_epoch = (score, p.clone(), q.clone()), 0, epoch
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best is None:
            self._publish(p, q)
        else:
            self._publish(best[1], best[2])
            log.info(
                "BPR-MF: best validation %.4f at epoch %d (trained %d of at most %d epochs)",
                best[0],
                self.best_epoch,
                len(self.epoch_losses),
                self.epochs,
            )

    def _publish(self, p: torch.Tensor, q: torch.Tensor) -> None:
        """Make factors ``p`` and item table ``q`` (bias last) the ones that score."""
        self.user_factors = p
        self.item_factors = q[:, :-1].contiguous()
        self.item_bias = q[:, -1].contiguous()

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users, items = users.cpu(), items.cpu()
        pu = self.user_factors[users]
        return torch.einsum("bf,bcf->bc", pu, self.item_factors[items]) + self.item_bias[items]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.item_bias, self.user_factors[users.cpu()], self.item_factors.T)
