"""``MultimodalRecommender``: the paper's model as a LightningModule.

User and item ids, visual, text, tag and numerical features are each projected into a
shared space of dimension ``dim``; the resulting tokens are fused by the module chosen
in the ``fusion`` config group and an MLP head gives a logit (sigma of it is the
interaction probability). A modality switched off has no parameters at all.

Item-side tokens do not depend on the user, so scoring many users against a chunk of
items computes them once per chunk and only runs the fusion per (user, item) pair.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from hydra.utils import instantiate
from torch import nn

from multirec.errors import MultirecError
from multirec.models.items import ItemInputs
from multirec.models.neural import NeuralRecommender, register


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
        provenance: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._build_tokens()
        self.modalities = self.user_modalities + self.item_modalities
        self.match_pairs = self._match_pairs() if match else []
        self.fusion = instantiate(fusion, dim=dim, n_tokens=len(self.modalities))
        self.head = nn.Sequential(
            nn.Linear(self.fusion.out_dim + len(self.match_pairs), head_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, 1),
        )
        self.loss_fn = instantiate(loss)
        self.profiles: dict[str, torch.Tensor] = {}  # per-user mean content features (float16)
        self.history: sp.csr_matrix | None = None  # binary training matrix, for user_history

    def _build_tokens(self) -> None:
        """One projection per switched-on modality, in a fixed order (so a seed gives the same
        weights); a modality switched off gets no parameters at all."""
        hp = self.hparams
        dim, dropout, hidden = hp.dim, hp.dropout, hp.projection_hidden
        # user-side tokens come first, then item-side tokens; `modalities` names them in order
        self.user_modalities: list[str] = []
        self.item_modalities: list[str] = []
        if hp.use_ids:
            self.user_emb = nn.Embedding(hp.n_users, dim)
            self.item_emb = nn.Embedding(hp.n_items, dim)
            # shared vector for items without training interactions (cold start); trained by
            # replacing a random share `id_dropout` of item ids with it
            self.unseen_item = nn.Parameter(torch.zeros(dim))
            for emb in (self.user_emb, self.item_emb):
                nn.init.normal_(emb.weight, std=0.05)
            self.user_modalities.append("user")
            self.item_modalities.append("item")
        if hp.visual_dim:
            self.visual_proj = _mlp(hp.visual_dim, hidden, dim, dropout)
            self.visual_missing = nn.Parameter(torch.zeros(dim))
            self.item_modalities.append("visual")
        if hp.text_dim:
            self.text_proj = _mlp(hp.text_dim, hidden, dim, dropout)
            self.text_missing = nn.Parameter(torch.zeros(dim))
            self.item_modalities.append("text")
        if hp.user_profile:
            # the user's taste: the mean id embedding of its training items (collaborative, as
            # in FISM/SVD++) and the mean feature of each content modality through the same
            # projection as items, so the fusion can compare user and item directly
            if hp.use_ids:
                self.user_modalities.append("user_history")
            self.user_modalities += [
                f"user_{m}" for m in ("visual", "text") if m in self.item_modalities
            ]
        if hp.use_tags:
            self.tag_proj = nn.Sequential(
                nn.Embedding(hp.n_tags, dim), nn.GELU(), nn.Linear(dim, dim)
            )
            self.item_modalities.append("tag")
        if hp.use_numeric and hp.n_numeric:
            self.numeric_proj = _mlp(hp.n_numeric, hidden, dim, dropout)
            self.item_modalities.append("numeric")
        if not self.user_modalities:
            raise MultirecError(
                "the model has no user-side token: enable model.use_ids or model.user_profile with an encoder"
            )
        if not self.item_modalities:
            raise MultirecError(
                "the model has no item modality left: enable ids, an encoder, tags or numerics"
            )

    def _match_pairs(self) -> list[tuple[int, int]]:
        """(user token, item token) pairs whose agreement is fed to the head: id with id,
        taste with content, as scaled dot products, since an MLP learns products slowly."""
        partner = {
            "user": "item",
            "user_history": "item",
            "user_visual": "visual",
            "user_text": "text",
        }
        return [
            (self.user_modalities.index(u), self.item_modalities.index(partner[u]))
            for u in self.user_modalities
        ]

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
        self.profiles = {}
        sides = [
            m.removeprefix("user_")
            for m in self.user_modalities
            if m in ("user_visual", "user_text")
        ]
        if (sides or "user_history" in self.user_modalities) and train_matrix is None:
            raise MultirecError(
                "user profiles need the training matrix: attach_items(items, train_matrix)"
            )
        if "user_history" in self.user_modalities:
            self.history = sp.csr_matrix(train_matrix, dtype=np.float32)
            self.history.data[:] = 1.0
        for side in sides:
            feats, ok = getattr(items, side), getattr(items, f"{side}_ok")
            self.profiles[side] = mean_profiles(sp.csr_matrix(train_matrix), feats, ok.numpy())

    def _item_tokens(self, items: torch.Tensor, id_dropout: bool = False) -> list[torch.Tensor]:
        """Item-side tokens for a 1-D tensor of item indices, each ``[n, dim]``."""
        assert self.items is not None, "call attach_items() first"
        it = self.items
        dev = self.device
        idx = items.to(it.tag.device)
        out = []
        if self.hparams.use_ids:
            q = self.item_emb(items)
            unseen = ~it.seen[idx].to(dev)
            if id_dropout and self.hparams.id_dropout > 0:
                unseen = unseen | (torch.rand(len(items), device=dev) < self.hparams.id_dropout)
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

    def _user_tokens(self, users: torch.Tensor) -> list[torch.Tensor]:
        """User-side tokens for a 1-D tensor of user indices, each ``[n, dim]``."""
        out = []
        if self.hparams.use_ids:
            out.append(self.user_emb(users))
        idx = users.cpu()
        if self.history is not None:
            out.append(self._history_sum(idx) / self._history_count(idx).clamp(min=1).unsqueeze(1))
        for side, prof in self.profiles.items():
            proj = self.visual_proj if side == "visual" else self.text_proj
            out.append(proj(prof[idx].to(self.device, torch.float32)))
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
        """:meth:`forward`'s logits and the fusion's modality weights."""
        b, c = items.shape
        # candidates repeat across a batch: project each distinct item once, then gather
        uniq, inverse = torch.unique(items.flatten(), return_inverse=True)
        item_toks = [t[inverse] for t in self._item_tokens(uniq, id_dropout)]
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
        """Scores ``[B, n_items]``; item tokens are computed once per chunk of items."""
        was_training = self.training
        self.eval()
        users = users.to(self.device)
        n_items = self.hparams.n_items
        user_tok = self._user_tokens(users)
        chunk = max(1, 131072 // max(len(users), 1))
        out = torch.empty(len(users), n_items)
        for s in range(0, n_items, chunk):
            items = torch.arange(s, min(s + chunk, n_items), device=self.device)
            out[:, s : s + len(items)] = (
                self._fuse(
                    user_tok, self._item_tokens(items), len(users), len(items), pairwise=True
                )[0]
                .float()
                .cpu()
            )
        self.train(was_training)
        return out

    @torch.no_grad()
    def modality_weights(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        """Per-modality fusion weights ``[B, C, M]`` (gated / attention fusion), else None."""
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
    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        users, pos, neg = batch
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)
        logits = self(users, items, id_dropout=True, exclude_first=True)
        extra = {}
        if self.loss_fn.needs_alignment:
            uniq = torch.unique(pos)
            toks = dict(zip(self.item_modalities, self._item_tokens(uniq), strict=True))
            extra = {"visual": toks.get("visual"), "text": toks.get("text")}
        out = self.loss_fn(logits[:, 0], logits[:, 1:], **extra)
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
        """AdamW, fused into one kernel per step where torch has one (CPU and CUDA).

        The id embeddings are most of the parameters (8.5 M of 9 M at PixelRec50K scale),
        and the for-loop AdamW took about 70 ms a step on one core to update them densely,
        a fifth of the step; the fused kernel does the same update in about 7 ms.
        """
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        return torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=fused or None,
        )
