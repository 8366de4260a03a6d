"""VBPR (He & McAuley, AAAI 2016): BPR matrix factorisation with a visual preference term.

The score is the paper's preference predictor with its visual bias term (section 3.2;
the global and user biases cancel out of every BPR difference, so they are left out),

    x_ui = b_i + <p_u, q_i> + <theta_u, E f_i> + <beta', f_i>,

with ``f_i`` the item's feature from the feature cache (the visual one; with ``use_text`` the
text feature concatenated to it), each side scaled to unit length, ``E`` a linear
projection to ``content_dim`` dimensions, ``theta_u`` the user's preference over those
dimensions and ``beta'`` a per-dimension content bias. An item whose feature could not be
encoded (``*_ok`` false) has a zero feature, so its content term is zero and it is scored by
BPR-MF alone; without any feature the model *is* BPR-MF
(:class:`multirec.baselines.bprmf.BPRMF`'s ``x_ui``).

Unit length matters because Adam moves every weight of ``E`` and ``beta'`` by about the
learning rate per step whatever its gradient: a step moves each coordinate of ``E f_i`` and
``<beta', f_i>`` by up to ``lr`` times the feature's L1 norm (about 225 for the raw
EfficientNet feature, non-negative with norm 18), where it moves each coordinate of ``q_i``
by ``lr``, so the content term would jump by whole score units each step. It also keeps the
two sides of ``use_text`` on one scale.

Training minimises BPR (section 3.3) over the data module's (user, positive, negatives)
batches with Adam, plus ``reg / 2`` times the squared norms of what each triple scores with:
the user vector ``[p_u, theta_u]``, each item's vector ``[q_i, E f_i]`` and its bias
``b_i + <beta', f_i>``: BPR-MF's penalty, with VBPR's vectors in place of BPR-MF's rows.
The shared ``E`` and ``beta'`` are penalised through what they produce for the batch's
items: with the feature as wide as the catalogue (1280 dimensions, a thousand items)
``E f_i`` can fit any item vector and ``<beta', f_i>`` any bias, so a penalty on ``q_i`` and
``b_i`` alone moves the whole fit into the unpenalised content term and BPR-MF's part
shrinks to nothing.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from multirec.errors import ConfigError, MultirecError
from multirec.models.factors import FactorRecommender, Tables, at_least, bpr, positive
from multirec.models.items import ItemInputs
from multirec.models.neural import register

ITEM_CHUNK = 8192  # items per feature projection when building the scoring tables


@register("vbpr")
class VBPR(FactorRecommender):
    """See the module docstring. ``n_tags`` and ``n_numeric`` (``**sizes``) are unused."""

    scores_cold_items = True  # through the visual (and text) term

    def __init__(
        self,
        n_users: int,
        n_items: int,
        visual_dim: int,
        text_dim: int,
        dim: int = 64,
        content_dim: int = 64,
        use_text: bool = False,
        lr: float = 1e-3,
        reg: float = 1e-4,
        provenance: dict | None = None,
        **sizes: int,
    ) -> None:
        super().__init__()
        at_least(1, dim=dim, content_dim=content_dim)
        at_least(0, reg=reg)
        positive(lr=lr)
        if use_text and not text_dim:
            raise ConfigError(
                "model.use_text=true but the encoder has no text side; pick one with text "
                "(e.g. encoder=effnet_sbert) or set model.use_text=false"
            )
        self.save_hyperparameters()
        self.feature_dim = visual_dim + (text_dim if use_text else 0)
        self.user_emb = nn.Embedding(n_users, dim)  # p_u
        self.item_emb = nn.Embedding(n_items, dim)  # q_i
        self.item_bias = nn.Embedding(n_items, 1)  # b_i
        for emb in (self.user_emb, self.item_emb):
            nn.init.normal_(emb.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)
        if self.feature_dim:
            self.user_content = nn.Embedding(n_users, content_dim)  # theta_u
            nn.init.normal_(self.user_content.weight, std=0.1)
            self.content_proj = nn.Linear(self.feature_dim, content_dim, bias=False)  # E
            self.content_bias = nn.Parameter(torch.zeros(self.feature_dim))  # beta'

    def attach_items(self, items: ItemInputs, train_matrix: sp.spmatrix) -> None:
        self.check_feature_dims(items)
        super().attach_items(items, train_matrix)

    def features(self, items: torch.Tensor) -> torch.Tensor:
        """``f_i`` for item indices ``[n]``: ``[n, feature_dim]`` float32, each side unit length,
        zero where missing."""
        if self.items is None:
            raise MultirecError(
                f"{self.name}: call attach(dataset, items) before scoring or fitting"
            )
        idx = items.cpu()
        sides = ["visual", "text"] if self.hparams.use_text else ["visual"]
        parts = [
            F.normalize(getattr(self.items, s)[idx].float(), dim=1)
            * getattr(self.items, f"{s}_ok")[idx].unsqueeze(1)
            for s in sides
            if getattr(self.items, s) is not None
        ]
        return torch.cat(parts, dim=1).to(self.device)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``[p_u, theta_u]`` for user indices ``[n]``."""
        if not self.feature_dim:
            return self.user_emb(users)
        return torch.cat([self.user_emb(users), self.user_content(users)], dim=1)

    def item_vectors(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[q_i, E f_i]`` and the bias ``b_i + <beta', f_i>`` for item indices ``[n]``."""
        vecs, bias = self.item_emb(items), self.item_bias(items).squeeze(1)
        if not self.feature_dim:
            return vecs, bias
        f = self.features(items)
        return torch.cat([vecs, self.content_proj(f)], dim=1), bias + f @ self.content_bias

    def tables(self) -> Tables:
        users = self.user_vectors(torch.arange(self.hparams.n_users, device=self.device))
        parts = [
            self.item_vectors(
                torch.arange(s, min(s + ITEM_CHUNK, self.hparams.n_items), device=self.device)
            )
            for s in range(0, self.hparams.n_items, ITEM_CHUNK)
        ]
        return users, torch.cat([v for v, _ in parts]), torch.cat([b for _, b in parts])

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        users, pos, neg = batch
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [B, 1 + N]
        u = self.user_vectors(users)
        vecs, bias = self.item_vectors(items.flatten())
        vecs, bias = vecs.view(*items.shape, -1), bias.view(items.shape)
        scores = (u.unsqueeze(1) * vecs).sum(-1) + bias
        sq = vecs.pow(2).sum(-1) + bias.pow(2)
        l2 = u.pow(2).sum(-1).mean() + sq[:, 0].mean() + sq[:, 1:].mean()
        return self.log_losses(
            {"bpr": bpr(scores[:, 0], scores[:, 1:]), "l2": self.hparams.reg / 2 * l2}, len(users)
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
