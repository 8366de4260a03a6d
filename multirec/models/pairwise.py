"""Pairwise scoring, the paper's design: user and item tokens fused together, an MLP head.

Every (user, item) pair runs the fusion, so it is kept for reproducing the paper; the
whole-catalogue ranking the field trusts is :mod:`multirec.models.two_tower`'s job.
"""

from __future__ import annotations

import torch
from torch import nn

from multirec.config import build
from multirec.models.tokens import PARTNER


class PairwiseScoring:
    """Mixin of :class:`~multirec.models.recommender.MultimodalRecommender` for
    ``model.scoring=pairwise``."""

    def _build_pairwise(
        self, fusion: dict, dim: int, head_hidden: int, dropout: float, match: bool
    ) -> None:
        # explicit user-item agreement per modality (id with id, taste with content): scaled dot
        # products fed to the head beside the fused vector, since an MLP learns products slowly
        self.match_pairs = (
            [
                (self.user_modalities.index(u), self.item_modalities.index(PARTNER[u]))
                for u in self.user_modalities
            ]
            if match
            else []
        )
        self.fusion = build(fusion, dim=dim, n_tokens=len(self.modalities))
        self.head = nn.Sequential(
            nn.Linear(self.fusion.out_dim + len(self.match_pairs), head_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, 1),
        )

    def _fuse(
        self,
        user_toks: list[torch.Tensor],
        item_toks: list[torch.Tensor],
        n_users: int,
        n_items: int,
        pairwise: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[n_users, n_items]`` and the fusion's modality weights ``[n_users * n_items, M]``
        (None when the fusion has none).

        ``pairwise``: every user against the same items (user tokens ``[n_users, d]``, item
        tokens ``[n_items, d]``, broadcast); otherwise both are per (user, item) row,
        ``[n_users * n_items, d]``.
        """
        if pairwise:
            us = [u.unsqueeze(1).expand(n_users, n_items, -1) for u in user_toks]
            its = [t.unsqueeze(0).expand(n_users, n_items, -1) for t in item_toks]
        else:
            us = [u.view(n_users, n_items, -1) for u in user_toks]
            its = [t.view(n_users, n_items, -1) for t in item_toks]
        tokens = torch.stack([*us, *its], dim=2).flatten(0, 1)  # [U*I, M, d]
        fused, weights = self.fusion(tokens)
        if self.match_pairs:
            scale = tokens.shape[-1] ** -0.5
            dots = [(us[u] * its[i]).sum(-1).flatten() * scale for u, i in self.match_pairs]
            fused = torch.cat([fused, torch.stack(dots, dim=1)], dim=1)
        return self.head(fused).view(n_users, n_items), weights

    def _pairwise_scores(
        self, users: torch.Tensor, items: torch.Tensor, id_dropout: bool, exclude_first: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, c = items.shape
        # candidates repeat across a batch: project each distinct item once, then gather
        uniq, inverse = torch.unique(items.flatten(), return_inverse=True)
        toks = self._item_tokens(uniq, self._unseen(uniq, id_dropout))
        item_toks = [t[inverse] for t in toks]
        uniq_users, user_inv = torch.unique(users, return_inverse=True)
        user_toks = [
            t[user_inv].unsqueeze(1).expand(b, c, -1) for t in self._user_tokens(uniq_users)
        ]
        if exclude_first and self.history is not None:
            # column 0 holds the training positive, which is in the user's own history: score it
            # against the history without it, as held-out items will be at evaluation (FISM)
            k = self.user_modalities.index("user_history")
            n = self._history_count(users.cpu()).unsqueeze(1)
            first = (user_toks[k][:, 0] * n - self.item_emb(items[:, 0])) / (n - 1).clamp(min=1)
            user_toks[k] = torch.cat([first.unsqueeze(1), user_toks[k][:, 1:]], dim=1)
        return self._fuse(
            [t.reshape(b * c, -1) for t in user_toks], item_toks, b, c, pairwise=False
        )
