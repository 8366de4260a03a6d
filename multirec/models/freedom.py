"""FREEDOM (Zhou & Shen, ACM MM 2023): "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation".

Two graphs on top of LightGCN (:class:`~multirec.models.lightgcn.LightGCN`):

* **frozen item-item graph** (section 3.1): per modality, each item's top-``knn_k`` cosine
  neighbours in the feature cache, normalised ``D^-1/2 S D^-1/2`` and combined as
  ``S = image_weight S_visual + (1 - image_weight) S_text``. It is built once, when
  the model first propagates, and never learned. The item id embeddings are propagated on it
  ``item_layers`` times, ``h = S^L q``, and ``h_i`` is added to the item's LightGCN
  embedding (section 3.3): ``x_ui = <e_u, e_i + h_i>``.
* **denoised user-item graph** (section 3.2): at every training epoch a share
  ``edge_dropout`` of the training edges is dropped, keeping each edge with probability
  proportional to ``1 / sqrt(d_u d_i)`` (degree-sensitive pruning: edges between popular
  nodes go first), and the kept graph is normalised afresh. Scoring uses the full graph.

The loss is BPR on the final embeddings plus, per modality, ``feature_weight`` times a BPR
loss between the user's embedding and a linear projection of the positive's and the
negative's raw features (section 3.4), which ties the modality spaces to the users'.

Choices where the paper leaves room, kept to the simplest faithful version:

* features stay as the feature cache holds them (the reference implementation also
  fine-tunes the feature tables; here only the projections learn);
* an item whose feature is missing (``*_ok`` false) has no edge in that modality's graph and a
  zero feature in its BPR term; a modality the encoder lacks has neither graph nor term;
* ``item_layers = 0`` switches the item-item graph off: the model is then LightGCN on the
  pruned graph plus the modality losses, and with the same embeddings it scores exactly like
  LightGCN.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn

from multirec.errors import ConfigError, MultirecError
from multirec.models.factors import at_least, dot_bpr
from multirec.models.graph import bipartite_adjacency, edge_weights, edges, knn_graph, sample_edges
from multirec.models.items import ItemInputs
from multirec.models.lightgcn import LightGCN
from multirec.models.neural import register


@register("freedom")
class FREEDOM(LightGCN):
    """See the module docstring; ``layers``, ``lr`` and ``reg`` are LightGCN's."""

    scores_cold_items = True  # through the frozen item-item content graph

    def __init__(
        self,
        n_users: int,
        n_items: int,
        visual_dim: int,
        text_dim: int,
        dim: int = 64,
        layers: int = 2,
        item_layers: int = 1,
        knn_k: int = 10,
        image_weight: float = 0.1,
        edge_dropout: float = 0.8,
        feature_weight: float = 1e-4,
        lr: float = 1e-3,
        reg: float = 0.0,
        provenance: dict | None = None,
        **sizes: int,
    ) -> None:
        at_least(0, item_layers=item_layers, feature_weight=feature_weight)
        at_least(1, knn_k=knn_k)
        if not 0.0 <= image_weight <= 1.0:
            raise ConfigError(f"model.image_weight must lie in [0, 1], got {image_weight}")
        if not 0.0 <= edge_dropout < 1.0:
            raise ConfigError(f"model.edge_dropout must lie in [0, 1), got {edge_dropout}")
        super().__init__(
            n_users,
            n_items,
            dim=dim,
            layers=layers,
            lr=lr,
            reg=reg,
            provenance=provenance,
            visual_dim=visual_dim,
            text_dim=text_dim,
            **sizes,
        )
        dims = {"visual": visual_dim, "text": text_dim}
        self.projections = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in dims.items() if d})
        self.item_graph: torch.Tensor | None = None  # frozen S, sparse, not saved
        self.pruned: torch.Tensor | None = None  # this epoch's denoised user-item graph
        self.edge_list: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def attach_items(self, items: ItemInputs, train_matrix: sp.spmatrix) -> None:
        """Keep the edges for pruning; the item-item graph is built from ``items`` on first use."""
        self.check_feature_dims(items)
        hp = self.hparams
        super().attach_items(items, train_matrix)
        users, item_ids = edges(train_matrix)
        self.edge_list = (users, item_ids, edge_weights(users, item_ids, hp.n_users, hp.n_items))
        self.pruned = None
        self.item_graph = None

    def frozen_item_graph(self) -> torch.Tensor | None:
        """``S``, or None without item layers or features. Built once, on the model's device
        when first needed (the similarity search is the costly part: a GPU does it fastest)."""
        hp = self.hparams
        if not hp.item_layers or not self.projections:
            return None
        if self.item_graph is None:
            assert self.items is not None, "attach_items() builds the model's inputs"
            graphs = {
                m: knn_graph(
                    getattr(self.items, m).to(self.device),
                    getattr(self.items, f"{m}_ok").to(self.device),
                    hp.knn_k,
                )
                for m in self.projections
            }
            if len(graphs) == 2:
                w = hp.image_weight
                self.item_graph = (w * graphs["visual"] + (1 - w) * graphs["text"]).coalesce()
            else:
                (self.item_graph,) = graphs.values()
        elif self.item_graph.device != self.device:
            self.item_graph = self.item_graph.to(self.device)
        return self.item_graph

    def prune(self) -> None:
        """Draw this epoch's denoised graph: keep ``1 - edge_dropout`` of the edges, each with
        probability proportional to ``1 / sqrt(d_u d_i)``, then renormalise (section 3.2)."""
        if self.edge_list is None:
            raise MultirecError(f"{self.name}: call attach(dataset, items) before fitting")
        self.edge_list = tuple(t.to(self.device) for t in self.edge_list)
        users, items, weights = self.edge_list
        kept = sample_edges(weights, int(len(weights) * (1.0 - self.hparams.edge_dropout)))
        self.pruned = bipartite_adjacency(
            users[kept], items[kept], self.hparams.n_users, self.hparams.n_items
        )

    def on_train_epoch_start(self) -> None:
        if self.hparams.edge_dropout > 0:
            self.prune()

    def training_graph(self) -> torch.Tensor:
        if self.hparams.edge_dropout == 0:
            return self.graph()
        if self.pruned is None or self.pruned.device != self.device:
            self.prune()
        return self.pruned

    def embeddings(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN's embeddings on ``adjacency``, items plus ``h = S^L q``."""
        users, items = super().embeddings(adjacency)
        graph = self.frozen_item_graph()
        if graph is None:
            return users, items
        h = self.item_emb.weight
        for _ in range(self.hparams.item_layers):
            h = torch.sparse.mm(graph, h)
        return users, items + h

    def features(self, modality: str, items: torch.Tensor) -> torch.Tensor:
        """Raw features of ``modality`` for item indices (any shape), float32, zero where missing."""
        assert self.items is not None, "attach_items() builds the model's inputs"
        idx = items.cpu()
        x = getattr(self.items, modality)[idx].float()
        return (x * getattr(self.items, f"{modality}_ok")[idx].unsqueeze(-1)).to(self.device)

    def batch_losses(
        self,
        user_vecs: torch.Tensor,
        item_vecs: torch.Tensor,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """LightGCN's BPR and L2, plus ``feature_weight`` times each modality's BPR."""
        out = super().batch_losses(user_vecs, item_vecs, users, pos, neg)
        u = user_vecs[users]
        for m, proj in self.projections.items():
            out[f"bpr_{m}"] = self.hparams.feature_weight * dot_bpr(
                u, proj(self.features(m, pos)), proj(self.features(m, neg))
            )
        return out
