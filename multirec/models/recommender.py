"""``MultimodalRecommender``: the paper's model as a LightningModule, with two scoring designs.

User and item ids, visual, text, tag and numerical features are each projected into a
shared space of dimension ``dim``: user-side tokens (id, mean history, content profiles) and
item-side tokens (id, cover, text, tag, counts). A modality switched off has no parameters.
``scoring`` chooses how they become a score:

* ``pairwise`` (the paper's): the module chosen in the ``fusion`` config group fuses the user's
  and the item's tokens together and an MLP head gives a logit, so every (user, item) pair runs
  the fusion -- about 33k scores/s on two cores, hours for a real catalogue's full ranking.
* ``two_tower``: the fusion runs over the item-side tokens into one item vector and over the
  user-side tokens into one user vector; the score is their dot product plus an item bias and,
  with ``match``, per-modality agreement (user id and mean history with item id, visual profile
  with cover, text profile with text). All of it is one dot product of concatenated vectors,
  so the whole catalogue's item vectors are computed once per set of weights and full ranking
  is a matrix product, at BPR-MF's cost. The id agreement is matrix factorisation itself, so
  the id path is never weaker than BPR-MF's model; content adds to it.

The paper's exact recipe is ``model.scoring=pairwise loss=bce``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch import nn

from multirec.config import build, plain
from multirec.errors import ConfigError, MultirecError
from multirec.models.items import ItemInputs
from multirec.models.neural import NeuralRecommender, register

SCORINGS = ("pairwise", "two_tower")
ITEM_CHUNK = 4096  # items per pass of the item tower when the whole catalogue is scored
# user-side token -> the item-side token it is compared with (agreement terms)
PARTNER = {"user": "item", "user_history": "item", "user_visual": "visual", "user_text": "text"}


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
    )


def mean_profiles(
    train: sp.csr_matrix, feats: torch.Tensor, ok: np.ndarray, block: int = 256
) -> torch.Tensor:
    """Per-user mean of the features of its training items with valid features (float16).

    Computed as a sparse x dense product in column blocks, so the float32 working copy
    stays ``n_items x block`` whatever the feature dimension.
    """
    weights = train.multiply(ok[None, :].astype(np.float32)).tocsr()
    counts = np.asarray(weights.sum(axis=1)).ravel()
    scale = sp.diags(1.0 / np.maximum(counts, 1.0))
    weights = (scale @ weights).astype(np.float32)
    out = np.empty((train.shape[0], feats.shape[1]), dtype=np.float16)
    for s in range(0, feats.shape[1], block):
        out[:, s : s + block] = weights @ feats[:, s : s + block].float().numpy()
    return torch.from_numpy(out)


@register("multimodal")
class MultimodalRecommender(NeuralRecommender):
    """See the module docstring. ``fusion`` and ``loss`` are their config groups' nodes
    (``_target_`` and settings); they are built here so that checkpoints store them as data."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_tags: int,
        n_numeric: int,
        visual_dim: int,
        text_dim: int,
        fusion: dict,
        loss: dict,
        scoring: str = "pairwise",
        dim: int = 64,
        use_ids: bool = True,
        user_profile: bool = True,
        match: bool = True,
        use_tags: bool = True,
        use_numeric: bool = True,
        projection_hidden: int = 256,
        head_hidden: int = 128,
        dropout: float = 0.1,
        id_dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        tower_weight_decay: float = 0.0,
        provenance: dict | None = None,
    ) -> None:
        super().__init__()
        fusion, loss, provenance = plain(fusion), plain(loss), plain(provenance)
        self.save_hyperparameters()
        if scoring not in SCORINGS:
            raise ConfigError(f"model.scoring={scoring!r} is unknown; valid: {', '.join(SCORINGS)}")
        # user-side tokens come first, then item-side tokens; `modalities` names them in order
        self.user_modalities: list[str] = []
        self.item_modalities: list[str] = []
        if use_ids:
            self.user_emb = nn.Embedding(n_users, dim)
            self.item_emb = nn.Embedding(n_items, dim)
            # shared vector for items without training interactions (cold start); trained by
            # replacing a random share `id_dropout` of item ids with it
            self.unseen_item = nn.Parameter(torch.zeros(dim))
            for emb in (self.user_emb, self.item_emb):
                nn.init.normal_(emb.weight, std=0.05)
            self.user_modalities.append("user")
            self.item_modalities.append("item")
        if visual_dim:
            self.visual_proj = _mlp(visual_dim, projection_hidden, dim, dropout)
            self.visual_missing = nn.Parameter(torch.zeros(dim))
            self.item_modalities.append("visual")
        if text_dim:
            self.text_proj = _mlp(text_dim, projection_hidden, dim, dropout)
            self.text_missing = nn.Parameter(torch.zeros(dim))
            self.item_modalities.append("text")
        if user_profile:
            # the user's taste: the mean id embedding of its training items (collaborative, as
            # in FISM/SVD++) and the mean feature of each content modality through the same
            # projection as items, so the fusion can compare user and item directly
            if use_ids:
                self.user_modalities.append("user_history")
            self.user_modalities += [
                f"user_{m}" for m in ("visual", "text") if m in self.item_modalities
            ]
        if use_tags:
            self.tag_proj = nn.Sequential(nn.Embedding(n_tags, dim), nn.GELU(), nn.Linear(dim, dim))
            self.item_modalities.append("tag")
        if use_numeric and n_numeric:
            self.numeric_proj = _mlp(n_numeric, projection_hidden, dim, dropout)
            self.item_modalities.append("numeric")
        if not self.user_modalities:
            raise MultirecError(
                "the model has no user-side token: enable model.use_ids or model.user_profile with an encoder"
            )
        if not self.item_modalities:
            raise MultirecError(
                "the model has no item modality left: enable ids, an encoder, tags or numerics"
            )
        self.modalities = self.user_modalities + self.item_modalities
        if scoring == "pairwise":
            self._build_pairwise(fusion, dim, head_hidden, dropout, match)
        else:
            self._build_two_tower(fusion, dim, match)
        self.loss_fn = build(loss)
        if scoring == "pairwise" and (self.loss_fn.share_negatives or self.loss_fn.in_batch):
            raise ConfigError(
                "loss.share_negatives and loss.in_batch need model.scoring=two_tower: pairwise "
                "scoring runs the fusion for every (user, negative) pair"
            )
        self.profiles: dict[str, torch.Tensor] = {}  # per-user mean content features (float16)
        self.profile_counts: dict[str, torch.Tensor] = {}  # items behind each user's profile
        self.history: sp.csr_matrix | None = None  # binary training matrix, for user_history
        self.train_matrix: sp.csr_matrix | None = None  # accidental hits among shared negatives
        self.item_log_share: torch.Tensor | None = None  # log of each item's share of positives
        self.draw_probabilities: torch.Tensor | None = None  # the negative sampler's, if known
        self._table: tuple[Any, ...] | None = None  # cached item vectors (two_tower, eval mode)

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
        partners = [m for m in ("item", "visual", "text") if m in self.item_modalities]
        pairs = [
            ([k for k, u in enumerate(self.user_modalities) if PARTNER[u] == m], m)
            for m in partners
        ]
        self.agreement = (
            [(users, self.item_modalities.index(m)) for users, m in pairs if users] if match else []
        )
        if self.hparams.use_ids:
            # popularity, as in BPR-MF's x_ui = p_u . q_i + b_i; unseen items share one bias
            self.item_bias = nn.Parameter(torch.zeros(self.hparams.n_items))
            self.unseen_bias = nn.Parameter(torch.zeros(()))

    @property
    def two_tower(self) -> bool:
        return self.hparams.scoring == "two_tower"

    @property
    def scores_cold_items(self) -> bool:
        """Whether items without training interactions get scores of their own: only through
        item content (cover, text, tag, counts). Without it they all share the 'unseen' id
        vector (and bias), so they tie with each other."""
        return any(m != "item" for m in self.item_modalities)

    # -- inputs ---------------------------------------------------------------------
    def attach_items(self, items: ItemInputs, train_matrix: sp.spmatrix | None = None) -> None:
        """Give the model its item table and, for user profiles, the training matrix.

        Neither is saved in checkpoints (see :meth:`NeuralRecommender.attach`).
        """
        hp = self.hparams
        if items.visual_dim != hp.visual_dim or items.text_dim != hp.text_dim:
            raise MultirecError(
                f"feature dimensions (visual {items.visual_dim}, text {items.text_dim}) do not match the "
                f"model's (visual {hp.visual_dim}, text {hp.text_dim}); use the encoder the model was trained with"
            )
        self.items = items
        self.profiles, self.profile_counts = {}, {}
        sides = [
            m.removeprefix("user_")
            for m in self.user_modalities
            if m in ("user_visual", "user_text")
        ]
        needs_matrix = sides or "user_history" in self.user_modalities or self.two_tower
        if needs_matrix and train_matrix is None:
            raise MultirecError(
                "user profiles and two-tower training need the training matrix: "
                "attach_items(items, train_matrix)"
            )
        if train_matrix is None:
            return
        binary = sp.csr_matrix(train_matrix, dtype=np.float32)
        binary.sum_duplicates()
        binary.data[:] = 1.0
        if "user_history" in self.user_modalities:
            self.history = binary
        if self.two_tower:
            self.train_matrix = binary
            counts = np.asarray(binary.sum(axis=0)).ravel()
            self.item_log_share = torch.from_numpy(
                np.log(np.maximum(counts, 0.5) / max(binary.nnz, 1)).astype(np.float32)
            )
        for side in sides:
            feats, ok = getattr(items, side), getattr(items, f"{side}_ok").numpy()
            self.profiles[side] = mean_profiles(binary, feats, ok)
            n_ok = np.asarray(binary.multiply(ok[None, :].astype(np.float32)).sum(axis=1)).ravel()
            self.profile_counts[side] = torch.from_numpy(n_ok.astype(np.float32))

    def _unseen(self, items: torch.Tensor, id_dropout: bool) -> torch.Tensor:
        """Which of ``items`` use the shared 'unseen' id: no training interactions, or (in
        training) a random share ``id_dropout`` that teaches the shared vector."""
        unseen = ~self.items.seen[items.to(self.items.tag.device)].to(self.device)
        if id_dropout and self.hparams.id_dropout > 0:
            unseen = unseen | (torch.rand(len(items), device=self.device) < self.hparams.id_dropout)
        return unseen

    def _item_tokens(self, items: torch.Tensor, unseen: torch.Tensor) -> list[torch.Tensor]:
        """Item-side tokens for a 1-D tensor of item indices, each ``[n, dim]``."""
        assert self.items is not None, "call attach_items() first"
        it = self.items
        dev = self.device
        idx = items.to(it.tag.device)
        out = []
        if self.hparams.use_ids:
            q = self.item_emb(items)
            out.append(torch.where(unseen.unsqueeze(1), self.unseen_item.expand_as(q), q))
        if self.hparams.visual_dim:
            v = self.visual_proj(it.visual[idx].to(dev, torch.float32))
            out.append(
                torch.where(
                    it.visual_ok[idx].to(dev).unsqueeze(1), v, self.visual_missing.expand_as(v)
                )
            )
        if self.hparams.text_dim:
            t = self.text_proj(it.text[idx].to(dev, torch.float32))
            out.append(
                torch.where(it.text_ok[idx].to(dev).unsqueeze(1), t, self.text_missing.expand_as(t))
            )
        if self.hparams.use_tags:
            out.append(self.tag_proj(it.tag[idx].to(dev)))
        if "numeric" in self.item_modalities:
            out.append(self.numeric_proj(it.numeric[idx].to(dev)))
        return out

    def _user_tokens(
        self, users: torch.Tensor, without: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """User-side tokens for a 1-D tensor of user indices, each ``[n, dim]``.

        ``without[b]`` (two-tower training) is a training item of ``users[b]`` left out of its
        history and content profiles, so that the positive is scored against the user as
        held-out items are at evaluation, not against a profile containing itself.
        """
        out = []
        if self.hparams.use_ids:
            out.append(self.user_emb(users))
        idx = users.cpu()
        if self.history is not None:
            total, n = self._history_sum(idx), self._history_count(idx)
            if without is not None:
                total, n = total - self.item_emb(without), n - 1
            out.append(total / n.clamp(min=1).unsqueeze(1))
        for side, prof in self.profiles.items():
            proj = self.visual_proj if side == "visual" else self.text_proj
            x = prof[idx].to(self.device, torch.float32)
            if without is not None:
                it, w = self.items, without.cpu()
                n = self.profile_counts[side][idx].to(self.device).unsqueeze(1)
                ok = getattr(it, f"{side}_ok")[w].to(self.device, torch.float32).unsqueeze(1)
                own = getattr(it, side)[w].to(self.device, torch.float32) * ok
                x = (x * n - own) / (n - ok).clamp(min=1)
            out.append(proj(x))
        return out

    def _history_count(self, users: torch.Tensor) -> torch.Tensor:
        h = self.history
        return torch.from_numpy(np.diff(h.indptr)[users.numpy()].astype(np.float32)).to(self.device)

    def _history_sum(self, users: torch.Tensor) -> torch.Tensor:
        """Sum of the id embeddings of each user's training items (sparse x dense)."""
        rows = self.history[users.numpy()].tocoo()
        idx = torch.from_numpy(np.vstack([rows.row, rows.col]).astype(np.int64))
        mat = torch.sparse_coo_tensor(
            idx,
            torch.from_numpy(rows.data),
            (len(users), self.hparams.n_items),
            check_invariants=False,
        )
        return torch.sparse.mm(mat.to(self.device), self.item_emb.weight)

    # -- pairwise scoring (the paper's) --------------------------------------------------
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

    # -- two-tower scoring ---------------------------------------------------------------
    def _user_vectors(self, toks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """User vectors ``[n, D]`` (fused, then one summed agreement token per item partner,
        all scaled by ``dim ** -0.5``) and the user fusion's weights."""
        fused, weights = self.user_fusion(torch.stack(toks, dim=1))
        parts = [self.user_out(fused)]
        parts += [torch.stack([toks[k] for k in users]).sum(0) for users, _ in self.agreement]
        return torch.cat(parts, dim=1) * self.hparams.dim**-0.5, weights

    def _item_vectors(
        self, items: torch.Tensor, unseen: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Item vectors ``[n, D]``, biases ``[n]`` and the item fusion's weights."""
        toks = self._item_tokens(items, unseen)
        fused, weights = self.item_fusion(torch.stack(toks, dim=1))
        vec = torch.cat([self.item_out(fused), *(toks[k] for _, k in self.agreement)], dim=1)
        if self.hparams.use_ids:
            bias = torch.where(unseen, self.unseen_bias, self.item_bias[items])
        else:
            bias = torch.zeros(len(items), device=self.device)
        return vec, bias, weights

    def _weights_key(self) -> tuple:
        """Changes whenever any weight does: an optimiser step or a loaded state bumps a
        tensor's version counter, moving the model moves its storage."""
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def _item_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Vectors, biases and fusion weights of the whole catalogue, in eval mode.

        Computed in chunks (bounded memory whatever the catalogue) and kept until a weight or
        the item inputs change, so an evaluation computes them once however many users it
        scores; resumed training invalidates them with its first step.
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
        uv, uw = self._user_vectors(
            self._user_tokens(users, items[:, 0] if exclude_first else None)
        )
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
        vec, bias, _ = self._item_vectors(uniq, self._unseen(uniq, True))
        uv, _ = self._user_vectors(self._user_tokens(users, pos))
        at_pos, at_neg = inverse[:b], inverse[b : b + neg.numel()].view(b, -1)
        at_all_pos = inverse[b + neg.numel() : b + neg.numel() + len(all_pos)]
        at_all_neg = inverse[b + neg.numel() + len(all_pos) :]
        pos_logits = (uv * vec[at_pos]).sum(-1) + bias[at_pos]
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

    # -- the Recommender interface ---------------------------------------------------
    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        id_dropout: bool = False,
        exclude_first: bool = False,
    ) -> torch.Tensor:
        """Logits ``[B, C]`` for each user in ``users [B]`` and its candidates ``items [B, C]``.

        Training passes ``exclude_first`` (column 0 is a training positive) and ``id_dropout``.
        """
        return self._scores(users, items, id_dropout, exclude_first)[0]

    def _scores(
        self, users: torch.Tensor, items: torch.Tensor, id_dropout: bool, exclude_first: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`forward`'s logits and the modality weights ``[B * C, M]``: the fusion's
        (pairwise), or the user tower's then the item tower's (two-tower, each summing to 1/2)."""
        score = self._two_tower_scores if self.two_tower else self._pairwise_scores
        return score(users, items, id_dropout, exclude_first)

    @torch.no_grad()
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        users, items = users.to(self.device), items.to(self.device)
        rows = max(1, 65536 // max(items.shape[1], 1))
        out = torch.cat(
            [self(users[i : i + rows], items[i : i + rows]) for i in range(0, len(users), rows)]
        )
        self.train(was_training)
        return out.float().cpu()

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items]``: two-tower, one matrix product with the cached item vectors;
        pairwise, item tokens computed once per chunk of items and fused per pair."""
        was_training = self.training
        self.eval()
        users = users.to(self.device)
        if self.two_tower:
            vec, bias, _ = self._item_table()
            uv, _ = self._user_vectors(self._user_tokens(users))
            out = torch.addmm(bias, uv, vec.T).float().cpu()
            self.train(was_training)
            return out
        n_items = self.hparams.n_items
        user_tok = self._user_tokens(users)
        chunk = max(1, 131072 // max(len(users), 1))
        out = torch.empty(len(users), n_items)
        for s in range(0, n_items, chunk):
            items = torch.arange(s, min(s + chunk, n_items), device=self.device)
            toks = self._item_tokens(items, self._unseen(items, False))
            out[:, s : s + len(items)] = (
                self._fuse(user_tok, toks, len(users), len(items), pairwise=True)[0].float().cpu()
            )
        self.train(was_training)
        return out

    @torch.no_grad()
    def modality_weights(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        """Per-modality weights ``[B, C, M]`` (gated / attention fusion), else None; two-tower:
        the user tower's over the user-side tokens, then the item tower's over the item-side,
        each halved so that all of them sum to 1."""
        was_training = self.training
        self.eval()
        users, items = users.to(self.device), items.to(self.device)
        rows = max(1, 65536 // max(items.shape[1], 1))
        parts = [
            self._scores(users[i : i + rows], items[i : i + rows], False, False)[1]
            for i in range(0, len(users), rows)
        ]
        self.train(was_training)
        if any(w is None for w in parts):
            return None
        return torch.cat(parts).view(*items.shape, -1).cpu()

    # -- training -------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Read the negative sampler's draw probabilities, which the logQ correction needs."""
        dm = getattr(self.trainer, "datamodule", None)
        sampler = getattr(dm, "sampler", None)
        if sampler is None:
            return
        probs = sampler.draw_probabilities()
        if probs is None and getattr(self.loss_fn, "logq", False) and self.two_tower:
            raise ConfigError(
                f"loss.logq needs the negatives' sampling probabilities, which "
                f"datamodule.negatives={sampler.negatives} has not; set loss.logq=false"
            )
        self.draw_probabilities = None if probs is None else torch.from_numpy(probs)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        users, pos, neg = batch
        valid = None
        if self.two_tower:
            pos_logits, neg_logits, valid, positives = self._two_tower_step(users, pos, neg)
        else:
            items = torch.cat([pos.unsqueeze(1), neg], dim=1)
            logits = self(users, items, id_dropout=True, exclude_first=True)
            pos_logits, neg_logits, positives = logits[:, 0], logits[:, 1:], torch.unique(pos)
        extra = {}
        if self.loss_fn.needs_alignment:
            unseen = self._unseen(positives, False)
            toks = dict(
                zip(self.item_modalities, self._item_tokens(positives, unseen), strict=True)
            )
            extra = {"visual": toks.get("visual"), "text": toks.get("text")}
        out = self.loss_fn(pos_logits, neg_logits, valid, **extra)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise MultirecError(
                f"training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "lower model.lr or check the features for NaN"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(users))
        parts = {f"train/{k}": v for k, v in out.items() if k != "loss"}
        self.log_dict(parts, batch_size=len(users))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW; two-tower: the fusion towers decay by ``tower_weight_decay`` instead, since
        on sparse data they memorise users and items where the dot products generalise."""
        hp = self.hparams
        if not self.two_tower:
            return torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        towers = ("user_fusion.", "item_fusion.", "user_out.", "item_out.")
        groups = [
            [p for n, p in self.named_parameters() if n.startswith(towers) == in_towers]
            for in_towers in (False, True)
        ]
        return torch.optim.AdamW(
            [
                {"params": groups[0], "weight_decay": hp.weight_decay},
                {"params": groups[1], "weight_decay": hp.tower_weight_decay},
            ],
            lr=hp.lr,
            fused=True,  # one kernel per tensor: the id tables' update dominates a step otherwise
        )
