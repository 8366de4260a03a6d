"""Two-tower scoring: one fused vector per user and per item, scored by their dot product.

The fusion runs over the item-side tokens into an item vector and over the user-side tokens
into a user vector; with ``match`` the per-modality agreement terms are concatenated to both,
so the score stays one dot product. A side seen through prototypes agrees as a topic mixture
(its item columns the assignment, its user columns the log taste; see
:mod:`multirec.models.prototypes`), any other side as the dot product of its tokens. The
catalogue's item vectors are computed once per set of weights and full ranking is a matrix
product, at BPR-MF's cost. Training scores each user against shared, in-batch or per-row
negatives, as the loss asks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from multirec.config import build
from multirec.models.prototypes import PrototypeProjection
from multirec.models.tokens import CONTENT, PARTNER

ITEM_CHUNK = 4096  # items per pass of the item tower when the whole catalogue is scored


class TwoTowerScoring:
    """Mixin of :class:`~multirec.models.recommender.MultimodalRecommender` for
    ``model.scoring=two_tower``."""

    def _build_two_tower(self, fusion: dict, dim: int, match: bool) -> None:
        self.user_fusion = build(fusion, dim=dim, n_tokens=len(self.user_modalities))
        self.item_fusion = build(fusion, dim=dim, n_tokens=len(self.item_modalities))
        # flatten pooling gives each tower its own width: bring both to `dim`
        self.user_out = (
            nn.Linear(self.user_fusion.out_dim, dim)
            if self.user_fusion.out_dim != dim
            else nn.Identity()
        )
        self.item_out = (
            nn.Linear(self.item_fusion.out_dim, dim, bias=False)
            if self.item_fusion.out_dim != dim
            else nn.Identity()
        )
        offset = self.item_fusion.offset()  # no ranking signal reaches it: see Fusion.offset
        if offset is not None:
            offset.requires_grad_(False)
        # agreement terms grouped by item-side token: the user tokens compared with one item
        # token are summed, so the vectors grow by `dim` per item token, not per pair; the id
        # block, (p_u + mean history) . q_i, is matrix factorisation itself (with FISM's term)
        partners = [m for m in ("item", *CONTENT) if m in self.item_modalities]
        pairs = [
            ([k for k, u in enumerate(self.user_modalities) if PARTNER[u] == m], m)
            for m in partners
        ]
        pairs = [(users, m) for users, m in pairs if users] if match else []
        # a prototype side agrees through its topic mixture (see multirec.models.prototypes)
        self.mixture_sides = [
            m for _, m in pairs if isinstance(self._projection(m), PrototypeProjection)
        ]
        self.agreement = [
            (users, self.item_modalities.index(m))
            for users, m in pairs
            if m not in self.mixture_sides
        ]
        if self.hparams.item_bias:
            # popularity, as in BPR-MF's x_ui = p_u . q_i + b_i; unseen items share one bias.
            # Apart from the id embeddings: a content-only model ranks by popularity too
            self.item_bias = nn.Parameter(torch.zeros(self.hparams.n_items))
        if self.hparams.item_bias or self.hparams.popularity_prior:
            self.unseen_bias = nn.Parameter(torch.zeros(()))
            # an unseen item's popularity guessed from its fused content (dropped ids teach it)
            self.unseen_popularity = nn.Linear(self.item_fusion.out_dim, 1, bias=False)
            nn.init.zeros_(self.unseen_popularity.weight)

    def _user_vectors(
        self, users: torch.Tensor, without: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """User vectors ``[n, D]`` (fused, then one summed agreement token per item partner,
        all scaled by ``dim ** -0.5``, then each mixture side's log taste) and the user
        fusion's weights; ``without`` as in :meth:`_user_tokens`."""
        tastes: dict[str, torch.Tensor] = {}
        toks = self._user_tokens(users, without, tastes)
        fused, weights = self.user_fusion(torch.stack(toks, dim=1))
        parts = [self.user_out(fused)]
        parts += [torch.stack([toks[k] for k in group]).sum(0) for group, _ in self.agreement]
        vec = torch.cat(parts, dim=1) * self.hparams.dim**-0.5
        return torch.cat([vec, *(tastes[m] for m in self.mixture_sides)], dim=1), weights

    def _item_vectors(
        self, items: torch.Tensor, unseen: torch.Tensor, without_users: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Item vectors ``[n, D]``, biases ``[n]`` and the item fusion's weights;
        ``without_users`` as in :meth:`_item_tokens`."""
        assignments: dict[str, torch.Tensor] = {}
        toks = self._item_tokens(items, unseen, assignments, without_users)
        fused, weights = self.item_fusion(torch.stack(toks, dim=1))
        vec = torch.cat(
            [
                self.item_out(fused),
                *(toks[k] for _, k in self.agreement),
                *(assignments[m] for m in self.mixture_sides),
            ],
            dim=1,
        )
        if self.hparams.popularity_prior:
            # log(training share): the popularity model's optimum, known for every item from
            # the start, so item_bias learns only what departs from it. Unscaled: a learned
            # scale falls below 1 in the few epochs early stopping keeps, which ranks the
            # popular items of a user's minor topics too low
            bias = self.item_log_share[items.cpu()].to(self.device)
        else:
            bias = torch.zeros(len(items), device=self.device)
        if self.hparams.item_bias:
            bias = bias + self.item_bias[items]
        if self.hparams.item_bias or self.hparams.popularity_prior:
            # an unseen item's count says nothing of its appeal: in place of the whole bias,
            # prior included, a guess from its content. With the prior nothing else pushes
            # the content towers to encode popularity, and a shared bias alone would rank
            # cold items by topic only (below ContentKNN on the learning tests' cold items)
            guess = self.unseen_bias + self.unseen_popularity(fused).squeeze(-1)
            bias = torch.where(unseen, guess, bias)
        return vec, bias, weights

    def _weights_key(self) -> tuple:
        """Changes when a weight is edited in place outside training (a loaded state, a hand
        edit bump the version counters) or the model moves (its storage moves). Fused
        optimisers step without bumping them: :meth:`on_train_batch_start` drops the table."""
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def _item_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Vectors, biases and fusion weights of the whole catalogue, in eval mode.

        Computed in chunks (bounded memory whatever the catalogue) and kept until a weight or
        the item inputs change, so an evaluation computes them once however many users it
        scores; every training batch drops them (see :meth:`_weights_key`).
        """
        assert not self.training, "item vectors are cached for scoring in eval mode only"
        key = self._weights_key()
        if self._table is None or self._table[0] is not self.items or self._table[1] != key:
            n = self.hparams.n_items
            parts = []
            for s in range(0, n, ITEM_CHUNK):
                items = torch.arange(s, min(s + ITEM_CHUNK, n), device=self.device)
                parts.append(self._item_vectors(items, self._unseen(items, False)))
            vec, bias, weights = (
                torch.cat([p[j] for p in parts]) if parts[0][j] is not None else None
                for j in range(3)
            )
            self._table = (self.items, key, vec, bias, weights)
        return self._table[2], self._table[3], self._table[4]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the weights are about to change, whatever the optimiser: what evaluation computed
        # from them (the item table, the audience's tastes) is stale after this step
        self._table = None
        self._audience_tables = {}

    def _expected_log_share(
        self, items: torch.Tensor, n_sampled: int, n_batch: int
    ) -> torch.Tensor:
        """log P(item among a row's negatives): ``n_sampled`` draws from the sampler and, with
        in-batch negatives, the batch's ``n_batch`` positives (drawn by popularity)."""
        q = (
            self.draw_probabilities[items.cpu()].to(self.device)
            if self.draw_probabilities is not None
            else torch.full(items.shape, 1.0 / self.hparams.n_items, device=self.device)
        )
        log_miss = n_sampled * torch.log1p(-q.clamp(max=1 - 1e-7))
        if n_batch:
            p = self.item_log_share[items.cpu()].to(self.device).exp()
            log_miss = log_miss + n_batch * torch.log1p(-p.clamp(max=1 - 1e-7))
        return torch.log((-torch.expm1(log_miss)).clamp(min=1e-12))

    def _hits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[B, K]``: is ``items[k]`` a training item of ``users[b]``? (O(history), not O(B K))"""
        rows = self.train_matrix[users.cpu().numpy()]
        column = np.full(self.hparams.n_items, -1, dtype=np.int64)
        column[items.cpu().numpy()] = np.arange(len(items))
        r = np.repeat(np.arange(len(users)), np.diff(rows.indptr))
        c = column[rows.indices]
        hit = torch.zeros(len(users), len(items), dtype=torch.bool)
        hit[torch.from_numpy(r[c >= 0]), torch.from_numpy(c[c >= 0])] = True
        return hit.to(self.device)

    def _two_tower_scores(
        self, users: torch.Tensor, items: torch.Tensor, id_dropout: bool, exclude_first: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, c = items.shape
        if self.training:
            uniq, inverse = torch.unique(items.flatten(), return_inverse=True)
            vec, bias, iw = self._item_vectors(uniq, self._unseen(uniq, id_dropout))
        else:
            vec, bias, iw = self._item_table()
            inverse = items.flatten()
        uv, uw = self._user_vectors(users, items[:, 0] if exclude_first else None)
        logits = torch.einsum("bd,bcd->bc", uv, vec[inverse].view(b, c, -1))
        logits = logits + bias[inverse].view(b, c)
        if uw is None or iw is None:
            return logits, None
        # each tower's weights halved, so that they sum to 1 over `modalities` as pairwise ones do
        weights = torch.cat([uw.unsqueeze(1).expand(b, c, -1), iw[inverse].view(b, c, -1)], dim=2)
        return logits, weights.flatten(0, 1) / 2

    @staticmethod
    def _global_batch(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The positives and negatives of the whole global batch under DDP (this process's
        alone otherwise): shared and in-batch negatives are then the ones a single process
        stepping over the global batch would use, so DDP trains what one process trains."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return pos, neg
        world = dist.get_world_size()
        size = torch.tensor([len(pos)], device=pos.device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        rows = torch.cat([pos.unsqueeze(1), neg], dim=1)
        longest = int(max(sizes))
        padded = torch.cat([rows, rows.new_full((longest - len(rows), rows.shape[1]), -1)])
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        rows = torch.cat([p[: int(n)] for p, n in zip(parts, sizes, strict=True)])
        return rows[:, 0], rows[:, 1:]

    def _two_tower_step(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Positive logits ``[B]``, negative logits ``[B, K]``, their validity and the distinct
        positives: every user vector against the negatives the loss asks for, one matrix
        product (shared negatives, in-batch positives) or per row (each positive's own)."""
        loss = self.loss_fn
        b = len(users)
        all_pos, all_neg = self._global_batch(pos, neg)
        uniq, inverse = torch.unique(
            torch.cat([pos, neg.flatten(), all_pos, all_neg.flatten()]), return_inverse=True
        )
        at_pos, at_neg = inverse[:b], inverse[b : b + neg.numel()].view(b, -1)
        at_all_pos = inverse[b + neg.numel() : b + neg.numel() + len(all_pos)]
        at_all_neg = inverse[b + neg.numel() + len(all_pos) :]
        unseen = self._unseen(uniq, True)
        if self.audience_weight is None:
            vec, bias, _ = self._item_vectors(uniq, unseen)
            pos_vec, pos_bias = vec[at_pos], bias[at_pos]
        else:
            # each positive once more, without its own user in its audience; as anyone
            # else's negative or in-batch column it keeps its whole audience (those users
            # are masked), so one pass computes both
            n = len(uniq)
            nobody = torch.full((n,), -1, dtype=users.dtype, device=users.device)
            vec, bias, _ = self._item_vectors(
                torch.cat([uniq, pos]),
                torch.cat([unseen, unseen[at_pos]]),
                torch.cat([nobody, users]),
            )
            vec, pos_vec, bias, pos_bias = vec[:n], vec[n:], bias[:n], bias[n:]
        uv, _ = self._user_vectors(users, pos)
        pos_logits = (uv * pos_vec).sum(-1) + pos_bias
        # (items of the columns: [K] shared by the batch or [B, N] per row, logits, validity)
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if loss.share_negatives:
            shared = torch.unique(at_all_neg)
            cols = uniq[shared]
            parts.append((cols, uv @ vec[shared].T + bias[shared], ~self._hits(users, cols)))
        else:
            own = torch.einsum("bd,bnd->bn", uv, vec[at_neg]) + bias[at_neg]
            parts.append((neg, own, torch.ones_like(neg, dtype=torch.bool)))
        if loss.in_batch:
            batch = torch.unique(at_all_pos)
            cols = uniq[batch]
            parts.append((cols, uv @ vec[batch].T + bias[batch], ~self._hits(users, cols)))
        if loss.logq:
            n_sampled = all_neg.numel() if loss.share_negatives else neg.shape[1]
            n_batch = len(all_pos) if loss.in_batch else 0
            pos_logits = pos_logits - self._expected_log_share(pos, n_sampled, n_batch)
            parts = [
                (c, x - self._expected_log_share(c, n_sampled, n_batch), v) for c, x, v in parts
            ]
        neg_logits = torch.cat([x for _, x, _ in parts], dim=1)
        return pos_logits, neg_logits, torch.cat([v for _, _, v in parts], dim=1), pos.unique()
