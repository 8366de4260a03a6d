"""``FactorRecommender``: models whose score is a dot product plus an item bias.

VBPR, LightGCN and FREEDOM all score ``x_ui = <u_u, v_i> + b_i`` from a user table and an
item table that depend on every parameter (a content projection over all items, a graph
propagation over all nodes). Building the tables is the expensive part, so scoring builds
them once and reuses them until a parameter changes: ``score_all`` is then one matrix
product, and an evaluation's many ``score`` calls cost one propagation.

A cached table is stale once a parameter changes. Parameter version counters catch in-place
edits (``load_state_dict``, non-fused optimisers, hand edits); fused optimisers step without
bumping them, so every training batch also drops the cache.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import scipy.sparse as sp
import torch
import torch.nn.functional as F

from multirec.errors import ConfigError, MultirecError
from multirec.models.items import ItemInputs
from multirec.models.neural import NeuralRecommender

Tables = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""User vectors ``[n_users, d]``, item vectors ``[n_items, d]``, item biases ``[n_items]`` or None."""


class FactorRecommender(NeuralRecommender):
    """Subclasses implement :meth:`tables` (the scoring tables, differentiable) and training."""

    def __init__(self) -> None:
        super().__init__()
        self._tables_cache: tuple[tuple, Tables] | None = None

    @abstractmethod
    def tables(self) -> Tables:
        """The tables every score is computed from (inference form: no pruning or dropout)."""

    def scoring_tables(self) -> Tables:
        """:meth:`tables` without gradients, reused while the parameters stay the same."""
        key = (self.device, *((p.data_ptr(), p._version) for p in self.parameters()))
        if self._tables_cache is None or self._tables_cache[0] != key:
            with torch.no_grad():
                self._tables_cache = (key, self.tables())
        return self._tables_cache[1]

    def attach_items(self, items: ItemInputs, train_matrix: sp.spmatrix) -> None:
        super().attach_items(items, train_matrix)
        self._tables_cache = None  # subclasses derive graphs or features from these

    def check_feature_dims(self, items: ItemInputs) -> None:
        """Refuse features of other dimensions than the model was built for (another encoder)."""
        hp = self.hparams
        if items.visual_dim != hp.visual_dim or items.text_dim != hp.text_dim:
            raise MultirecError(
                f"feature dimensions (visual {items.visual_dim}, text {items.text_dim}) do not match the "
                f"model's (visual {hp.visual_dim}, text {hp.text_dim}); use the encoder the model was trained with"
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._tables_cache = None

    def log_losses(self, parts: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        """Sum of the loss ``parts``, each logged as ``train/<name>``; a non-finite sum stops
        training with one line."""
        loss = torch.stack(list(parts.values())).sum()
        if not torch.isfinite(loss):
            raise MultirecError(
                f"training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "lower model.lr or check the features for NaN"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=batch_size)
        return loss

    @torch.no_grad()
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        user_vecs, item_vecs, bias = self.scoring_tables()
        users, items = users.to(self.device), items.to(self.device)
        rows = max(1, 65536 // max(items.shape[1], 1))  # bounds the [rows, C, d] gather
        out = []
        for u, i in zip(users.split(rows), items.split(rows), strict=True):
            part = torch.einsum("bd,bcd->bc", user_vecs[u], item_vecs[i])
            out.append(part if bias is None else part + bias[i])
        return torch.cat(out)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        user_vecs, item_vecs, bias = self.scoring_tables()
        out = user_vecs[users.to(self.device)] @ item_vecs.T
        return out if bias is None else out + bias


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BPR loss ``-ln sigma(x_ui - x_uj)`` (Rendle et al., UAI 2009: BPR-Opt without its prior)
    averaged over pairs: positive scores ``[B]`` against negative scores ``[B, N]``."""
    return -F.logsigmoid(pos.unsqueeze(1) - neg).mean()


def dot_bpr(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """:func:`bpr` of dot-product scores: user vectors ``[B, d]``, positive item vectors
    ``[B, d]``, negative item vectors ``[B, N, d]``."""
    return bpr((users * pos).sum(-1), (users.unsqueeze(1) * neg).sum(-1))


def at_least(low: float, **values: float) -> None:
    """One-line :class:`ConfigError` for the first ``model.<key>`` below ``low``."""
    for key, value in values.items():
        if value < low:
            raise ConfigError(f"model.{key} must be >= {low}, got {value}")


def positive(**values: float) -> None:
    """One-line :class:`ConfigError` for the first ``model.<key>`` that is not above 0."""
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(f"model.{key} must be > 0, got {value}")
