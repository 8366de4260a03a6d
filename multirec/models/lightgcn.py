"""LightGCN (He et al., SIGIR 2020): collaborative filtering by linear graph propagation.

Users and items have only id embeddings ``E^(0)``. They are propagated on the
symmetric-normalised user-item graph of the *training* interactions,
``E^(l+1) = D^-1/2 A D^-1/2 E^(l)`` (eq. 7), without transforms or non-linearities, and the
final embedding is the mean over layers ``0..L`` (eq. 8 with ``alpha_l = 1 / (L + 1)``). The
score is ``x_ui = <e_u, e_i>`` (eq. 5), trained by Adam on BPR with L2 on the batch's layer-0
embeddings (eq. 15). With ``layers = 0`` it is plain matrix factorisation.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn

from multirec.errors import MultirecError
from multirec.models.factors import FactorRecommender, Tables, at_least, dot_bpr, positive
from multirec.models.graph import bipartite_adjacency, edges, propagate
from multirec.models.items import ItemInputs
from multirec.models.neural import register


@register("lightgcn")
class LightGCN(FactorRecommender):
    """See the module docstring. Other dataset sizes (:func:`~multirec.models.neural.dataset_sizes`)
    are accepted and unused: LightGCN reads no features."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        layers: int = 3,
        lr: float = 1e-3,
        reg: float = 1e-4,
        provenance: dict | None = None,
        **sizes: int,
    ) -> None:
        super().__init__()
        at_least(1, dim=dim)
        at_least(0, layers=layers, reg=reg)
        positive(lr=lr)
        self.save_hyperparameters()
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        for emb in (self.user_emb, self.item_emb):
            nn.init.normal_(emb.weight, std=0.1)
        self.adjacency: torch.Tensor | None = None  # D^-1/2 A D^-1/2, sparse, not saved

    def attach_items(self, items: ItemInputs, train_matrix: sp.spmatrix) -> None:
        """Build the normalised graph of ``train_matrix`` (rebuilt on attach, never saved)."""
        super().attach_items(items, train_matrix)
        users, item_ids = edges(train_matrix)
        self.adjacency = bipartite_adjacency(
            users, item_ids, self.hparams.n_users, self.hparams.n_items
        )

    def graph(self) -> torch.Tensor:
        """The full normalised user-item graph, on the model's device."""
        if self.adjacency is None:
            raise MultirecError(
                f"{self.name}: call attach(dataset, items) before scoring or fitting"
            )
        if self.adjacency.device != self.device:
            self.adjacency = self.adjacency.to(self.device)
        return self.adjacency

    def training_graph(self) -> torch.Tensor:
        """The graph training propagates on (FREEDOM prunes it)."""
        return self.graph()

    def embeddings(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user ``[n_users, d]`` and item ``[n_items, d]`` embeddings on ``adjacency``."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        out = propagate(adjacency, ego, self.hparams.layers)
        return out[: self.hparams.n_users], out[self.hparams.n_users :]

    def tables(self) -> Tables:
        users, items = self.embeddings(self.graph())
        return users, items, None

    def batch_losses(
        self,
        user_vecs: torch.Tensor,
        item_vecs: torch.Tensor,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """BPR on the final embeddings plus ``reg / 2`` times the squared norms of the
        layer-0 embeddings of the batch's users, positives and negatives (eq. 15)."""
        l2 = (
            self.user_emb(users).pow(2).sum(-1).mean()
            + self.item_emb(pos).pow(2).sum(-1).mean()
            + self.item_emb(neg).pow(2).sum(-1).mean()
        )
        return {
            "bpr": dot_bpr(user_vecs[users], item_vecs[pos], item_vecs[neg]),
            "l2": self.hparams.reg / 2 * l2,
        }

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        users, pos, neg = batch
        user_vecs, item_vecs = self.embeddings(self.training_graph())
        return self.log_losses(self.batch_losses(user_vecs, item_vecs, users, pos, neg), len(users))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
