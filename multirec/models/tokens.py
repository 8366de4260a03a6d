"""The multimodal recommender's tokens: every input projected into one shared space.

User and item ids, visual, text, tag and numerical features each become a ``dim``-wide
token (cover and text one ``content`` token when they share prototypes, see
:mod:`multirec.models.prototypes`); user-side tokens (id, mean history, content profiles)
describe a user's taste with the same projections as the items they are compared with.
Both scoring designs (:mod:`multirec.models.pairwise`, :mod:`multirec.models.two_tower`)
start from these tokens.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from multirec.errors import ConfigError, MultirecError
from multirec.models.items import ItemInputs
from multirec.models.prototypes import PrototypeProjection

REDUCE_CHUNK = 8192  # feature rows per product when the catalogue is put on a basis
# user-side token -> the item-side token it is compared with (agreement terms)
PARTNER = {
    "user": "item",
    "user_history": "item",
    "user_visual": "visual",
    "user_text": "text",
    "user_content": "content",
}
# item-side tokens of content; "content" is cover and text seen through one set of prototypes
CONTENT = ("visual", "text", "content")


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
    )


def mean_profiles(
    train: sp.csr_matrix, feats: torch.Tensor, ok: np.ndarray, block: int = 64
) -> torch.Tensor:
    """Per-user mean of the features of its training items with valid features (float16).

    Computed as a sparse x dense product in column blocks, so the float32 working copies
    stay ``(n_items + n_users) x block`` whatever the feature dimension (34 MB at
    PixelRec50K scale; they add to the peak memory of training).
    """
    weights = train.multiply(ok[None, :].astype(np.float32)).tocsr()
    counts = np.asarray(weights.sum(axis=1)).ravel()
    scale = sp.diags(1.0 / np.maximum(counts, 1.0))
    weights = (scale @ weights).astype(np.float32)
    out = np.empty((train.shape[0], feats.shape[1]), dtype=np.float16)
    for s in range(0, feats.shape[1], block):
        out[:, s : s + block] = weights @ feats[:, s : s + block].float().numpy()
    return torch.from_numpy(out)


class ModalityTokens:
    """Mixin of :class:`~multirec.models.recommender.MultimodalRecommender`: builds the
    projections from its hyperparameters and turns user and item indices into tokens."""

    def _build_tokens(self) -> None:
        """One projection per switched-on modality, in a fixed order (so a seed gives the same
        weights); a modality switched off gets no parameters at all."""
        hp = self.hparams
        dim, dropout, hidden = hp.dim, hp.dropout, hp.projection_hidden
        if (
            isinstance(hp.prototypes, bool)
            or not isinstance(hp.prototypes, int)
            or hp.prototypes < 0
        ):
            raise ConfigError(
                f"model.prototypes={hp.prototypes!r} must be 0 (an MLP over the features) or a "
                "number of prototypes"
            )

        def content(in_dim: int) -> nn.Module:
            if hp.prototypes:
                return PrototypeProjection(in_dim, hp.prototypes, dim)
            return mlp(in_dim, hidden, dim, dropout)

        # user-side tokens come first, then item-side tokens; `modalities` names them in order
        self.user_modalities: list[str] = []
        self.item_modalities: list[str] = []
        if hp.use_ids:
            # sparse gradients: the optimiser updates only the rows a batch touched (RowAdamW)
            self.user_emb = nn.Embedding(hp.n_users, dim, sparse=True)
            self.item_emb = nn.Embedding(hp.n_items, dim, sparse=True)
            # shared vector for items without training interactions (cold start); trained by
            # replacing a random share `id_dropout` of item ids with it
            self.unseen_item = nn.Parameter(torch.zeros(dim))
            for emb in (self.user_emb, self.item_emb):
                nn.init.normal_(emb.weight, std=0.05)
            self.user_modalities.append("user")
            self.item_modalities.append("item")
        sides = [(m, d) for m, d in (("visual", hp.visual_dim), ("text", hp.text_dim)) if d]
        if hp.joint_prototypes and hp.prototypes and len(sides) == 2:
            # one topic per item from cover and text together: where the title is vague the
            # cover decides, where both speak they are one piece of evidence, not two
            sides = [("content", hp.visual_dim + hp.text_dim)]
        for side, in_dim in sides:
            setattr(self, f"{side}_proj", content(in_dim))
            setattr(self, f"{side}_missing", nn.Parameter(torch.zeros(dim)))
            self.item_modalities.append(side)
        self.audience_weight: nn.Parameter | None = None
        if hp.audience and hp.prototypes and sides and hp.scoring == "two_tower":
            # how far an item's prototype assignment follows its audience's tastes
            self.audience_weight = nn.Parameter(torch.ones(()))
            # the tastes training hears, saved with the model: a run resumed mid-epoch
            # goes on with the epoch's own, not ones from the weights it stopped at
            for side, _ in sides:
                self.register_buffer(f"{side}_audience", torch.zeros(hp.n_items, hp.prototypes))
                self.register_buffer(f"{side}_tastes", torch.zeros(hp.n_users, hp.prototypes))
            self.register_buffer("audience_epoch", torch.tensor(-1))  # the epoch they are of
        if hp.user_profile:
            # the user's taste: the mean id embedding of its training items (collaborative, as
            # in FISM/SVD++) and the mean feature of each content modality through the same
            # projection as items, so the fusion can compare user and item directly
            if hp.use_ids:
                self.user_modalities.append("user_history")
            self.user_modalities += [f"user_{m}" for m in CONTENT if m in self.item_modalities]
        if hp.use_tags:
            self.tag_proj = nn.Sequential(
                nn.Embedding(hp.n_tags, dim), nn.GELU(), nn.Linear(dim, dim)
            )
            self.item_modalities.append("tag")
        if hp.use_numeric and hp.n_numeric:
            self.numeric_proj = mlp(hp.n_numeric, hidden, dim, dropout)
            self.item_modalities.append("numeric")
        if not self.user_modalities:
            raise MultirecError(
                "the model has no user-side token: enable model.use_ids or model.user_profile with an encoder"
            )
        if not self.item_modalities:
            raise MultirecError(
                "the model has no item modality left: enable ids, an encoder, tags or numerics"
            )

    @property
    def scores_cold_items(self) -> bool:
        """Whether items without training interactions get scores of their own: only through
        item content (cover, text, tag, counts). Without it they all share the 'unseen' id
        vector (and bias), so they tie with each other."""
        return any(m != "item" for m in self.item_modalities)

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
        self._reduced_tables = {}  # new features: nothing computed from the old ones holds
        self._audience_tables = {}
        if self.audience_weight is not None:
            self.audience_epoch.fill_(-1)
        for side in self._content_sides():
            proj = self._projection(side)
            if isinstance(proj, PrototypeProjection):
                valid = self._ok(side, slice(None))
                proj.initialise(lambda rows, side=side: self._side_rows(side, rows), valid)
        sides = self._profile_sides()
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
        # MLP sides average features once here; prototype sides average assignments per call
        averaged = [s for s in sides if not isinstance(self._projection(s), PrototypeProjection)]
        self.profile_history = binary if len(averaged) < len(sides) else None
        if self.two_tower:
            self.train_matrix = binary
            counts = np.asarray(binary.sum(axis=0)).ravel()
            self.item_log_share = torch.from_numpy(
                np.log(np.maximum(counts, 0.5) / max(binary.nnz, 1)).astype(np.float32)
            )
            self.listeners = torch.from_numpy(counts.astype(np.float32))
        for side in averaged:
            feats, ok = getattr(items, side), getattr(items, f"{side}_ok").numpy()
            self.profiles[side] = mean_profiles(binary, feats, ok)
            n_ok = np.asarray(binary.multiply(ok[None, :].astype(np.float32)).sum(axis=1)).ravel()
            self.profile_counts[side] = torch.from_numpy(n_ok.astype(np.float32))

    def _projection(self, side: str) -> nn.Module | None:
        """The ``visual``, ``text`` or ``content`` projection, None when the model has none."""
        return getattr(self, f"{side}_proj", None)

    def _content_sides(self) -> list[str]:
        """The item-side content tokens, in token order."""
        return [m for m in self.item_modalities if m in CONTENT]

    def _profile_sides(self) -> list[str]:
        """The content sides with a user profile token, in token order."""
        return [
            m.removeprefix("user_")
            for m in self.user_modalities
            if m.removeprefix("user_") in CONTENT
        ]

    def _ok(self, side: str, rows: torch.Tensor | slice) -> torch.Tensor:
        """Bool, one per item of ``rows``: which have ``side`` features (content: either
        side's). Indexed before the two flags are combined, so a step pays for its rows,
        not the catalogue."""
        it = self.items
        if side == "content":
            return it.visual_ok[rows] | it.text_ok[rows]
        return getattr(it, f"{side}_ok")[rows]

    def _side_rows(self, side: str, rows: torch.Tensor | slice) -> torch.Tensor:
        """``side`` features of the items ``rows`` as float32 on the model's device. Content
        rows are the text and the cover features, each of unit length (zeros where missing),
        side by side, so each weighs the same in a cosine similarity."""
        it, dev = self.items, self.device
        if side != "content":
            return getattr(it, side)[rows].to(dev, torch.float32)
        halves = [
            nn.functional.normalize(getattr(it, m)[rows].to(dev, torch.float32), dim=1)
            * getattr(it, f"{m}_ok")[rows].to(dev).unsqueeze(1)
            for m in ("text", "visual")
        ]
        return torch.cat(halves, dim=1)

    def _unseen(self, items: torch.Tensor, id_dropout: bool) -> torch.Tensor:
        """Which of ``items`` use the shared 'unseen' id: no training interactions, or (in
        training) a random share ``id_dropout`` that teaches the shared vector."""
        unseen = ~self.items.seen[items.to(self.items.tag.device)].to(self.device)
        if id_dropout and self.hparams.id_dropout > 0:
            unseen = unseen | (torch.rand(len(items), device=self.device) < self.hparams.id_dropout)
        return unseen

    def _item_tokens(
        self,
        items: torch.Tensor,
        unseen: torch.Tensor,
        assignments: dict[str, torch.Tensor] | None = None,
        without_users: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Item-side tokens for a 1-D tensor of item indices, each ``[n, dim]``.

        ``assignments``, when given, receives each prototype side's assignments ``[n, k]``
        (even for an item without valid features), which the two-tower topic mixture reads.
        ``without_users[b]`` (two-tower training: the user of the positive ``items[b]``; -1
        for none) is left out of that item's audience, so a positive is placed as a
        held-out item is.
        """
        assert self.items is not None, "call attach_items() first"
        it = self.items
        dev = self.device
        idx = items.to(it.tag.device)
        out = []
        if self.hparams.use_ids:
            q = self.item_emb(items)
            out.append(torch.where(unseen.unsqueeze(1), self.unseen_item.expand_as(q), q))
        for side in self._content_sides():
            proj = self._projection(side)
            ok = self._ok(side, idx).to(dev).unsqueeze(1)
            if isinstance(proj, PrototypeProjection):
                logits = proj.logits(self._reduced(side)[items])
                if self.audience_weight is not None:
                    heard = self._audience_taste(side, proj, items, unseen, without_users)
                    logits = logits + self.audience_weight * heard
                q = torch.softmax(logits, dim=1)
                tok = proj.out(q)
                if assignments is not None:
                    # no features, no topic evidence: an even share of every prototype, so
                    # its agreement is the user's mean log taste, not the 0 above every
                    # item whose topic is known (log tastes are mostly negative)
                    assignments[side] = torch.where(ok, q, 1.0 / q.shape[1])
            else:
                tok = proj(self._side_rows(side, idx))
            out.append(torch.where(ok, tok, getattr(self, f"{side}_missing").expand_as(tok)))
        if self.hparams.use_tags:
            out.append(self.tag_proj(it.tag[idx].to(dev)))
        if "numeric" in self.item_modalities:
            out.append(self.numeric_proj(it.numeric[idx].to(dev)))
        return out

    def _alignment_tokens(self, items: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The cover's and the text's tokens of ``items`` (None for a side the model lacks),
        which the contrastive loss aligns. With joint prototypes, each side alone (the other
        half of the content row zero) through them: what the cover says against what the
        text says, in the categories they share."""
        if "content" not in self.item_modalities:
            toks = self._item_tokens(items, self._unseen(items, False))
            named = dict(zip(self.item_modalities, toks, strict=True))
            return {"visual": named.get("visual"), "text": named.get("text")}
        proj, rows = self.content_proj, self._side_rows("content", items.cpu())
        text_width = self.hparams.text_dim  # content rows are [text, cover]
        alone = {"text": rows.clone(), "visual": rows.clone()}
        alone["text"][:, text_width:] = 0
        alone["visual"][:, :text_width] = 0
        return {m: proj.out(proj.assign(proj.reduce(x))) for m, x in alone.items()}

    def _user_tokens(
        self,
        users: torch.Tensor,
        without: torch.Tensor | None = None,
        tastes: dict[str, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """User-side tokens for a 1-D tensor of user indices, each ``[n, dim]``.

        ``without[b]`` (two-tower training) is a training item of ``users[b]`` left out of its
        history and content profiles, so that the positive is scored against the user as
        held-out items are at evaluation, not against a profile containing itself.
        ``tastes``, when given, receives each prototype side's topic-mixture user side
        (:meth:`PrototypeProjection.log_taste`, ``[n, k]``).
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
        history = None  # (items, owner): one history gather shared by both prototype sides
        for side in self._profile_sides():
            proj = self._projection(side)
            if isinstance(proj, PrototypeProjection):
                if history is None:
                    history = self._profile_items(idx, without)
                total, count = self._assignment_sum(side, proj, *history, len(idx))
                out.append(proj.out(total / count.clamp(min=1)))
                if tastes is not None:
                    tastes[side] = proj.log_taste(total, count)
                continue
            x = self.profiles[side][idx].to(self.device, torch.float32)
            if without is not None:
                it, w = self.items, without.cpu()
                n = self.profile_counts[side][idx].to(self.device).unsqueeze(1)
                ok = getattr(it, f"{side}_ok")[w].to(self.device, torch.float32).unsqueeze(1)
                own = getattr(it, side)[w].to(self.device, torch.float32) * ok
                x = (x * n - own) / (n - ok).clamp(min=1)
            out.append(proj(x))
        return out

    def _assignment_sum(
        self,
        side: str,
        proj: PrototypeProjection,
        items: np.ndarray,
        owner: np.ndarray,
        n_users: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``([n_users, k], [n_users, 1])``: per user, the sum of the prototype assignments
        of their history ``items`` (:meth:`_profile_items`; ``owner`` the user's row) with
        valid ``side`` features, assigned afresh at every call, and how many items that is."""
        items_t = torch.from_numpy(items)
        owner_t = torch.from_numpy(owner).to(self.device)
        weight = self._ok(side, items_t).to(self.device, torch.float32).unsqueeze(1)
        share = proj.assign(self._reduced(side)[items_t.to(self.device)]) * weight
        k = proj.centroids.shape[0]
        total = torch.zeros(n_users, k, device=self.device).index_add_(0, owner_t, share)
        count = torch.zeros(n_users, 1, device=self.device).index_add_(0, owner_t, weight)
        return total, count

    def _audience_taste(
        self,
        side: str,
        proj: PrototypeProjection,
        items: torch.Tensor,
        unseen: torch.Tensor,
        without_users: torch.Tensor | None,
    ) -> torch.Tensor:
        """``[n, k]``: the mean log taste of each item's training users (``without_users[b]``
        left out of item ``b``'s unless -1); zero for an item without any, or whose id
        training drops, which stands for one."""
        summed, taste = self._audience(side, proj)
        # indexed where it lives, as the popularity prior is: a step moves its items' counts
        total, n = summed[items], self.listeners[items.cpu()].to(self.device)
        if without_users is not None:
            left = (without_users >= 0).to(total.dtype)
            total = total - taste[without_users.clamp(min=0)] * left.unsqueeze(1)
            n = n - left
        heard = (~unseen & (n > 0)).unsqueeze(1)
        return torch.where(heard, total / n.clamp(min=1).unsqueeze(1), 0.0)

    @torch.no_grad()
    def _audience(self, side: str, proj: PrototypeProjection) -> tuple[torch.Tensor, torch.Tensor]:
        """``side``'s audience: per item the sum of its training users' log tastes
        ``[n_items, k]`` (their number is ``listeners``), and per user the log taste
        ``[n_users, k]`` of their whole training history, from its items' content. Evidence,
        not a path for gradients: computed once per set of weights in evaluation, as the
        item table is, and in training once per epoch, where per step it would cost more
        than the step."""
        if self.training:
            if int(self.audience_epoch) != self.current_epoch:
                for s in self._content_sides():
                    summed, taste = self._tastes(s, self._projection(s))
                    getattr(self, f"{s}_audience").copy_(summed)
                    getattr(self, f"{s}_tastes").copy_(taste)
                self.audience_epoch.fill_(self.current_epoch)
            return getattr(self, f"{side}_audience"), getattr(self, f"{side}_tastes")
        key = self._weights_key()
        if self._audience_tables.get(side, (None,))[0] != key:
            self._audience_tables[side] = (key, self._tastes(side, proj))
        return self._audience_tables[side][1]

    def _tastes(self, side: str, proj: PrototypeProjection) -> tuple[torch.Tensor, torch.Tensor]:
        """Per item the sum of its training users' log tastes, and per user the log taste
        (see :meth:`_audience`), from the weights as they are."""
        m, dev = self.train_matrix, self.device
        ok = self._ok(side, slice(None)).cpu().numpy().astype(np.float32)
        q = proj.assign(self._reduced(side)).cpu().numpy() * ok[:, None]
        count = torch.from_numpy(m @ ok).unsqueeze(1)
        taste = proj.log_taste(torch.from_numpy(m @ q).to(dev), count.to(dev))
        return torch.from_numpy(m.T @ taste.cpu().numpy()).to(dev), taste

    @torch.no_grad()
    def _reduced(self, side: str) -> torch.Tensor:
        """``[n_items, width]`` float32: every item's ``side`` features on its prototype
        projection's basis, on the model's device. Kept until the features or the basis
        change (the start, a loaded state or a move to another device replace it), so a
        step gathers narrow rows instead of converting wide float16 ones."""
        proj, it = self._projection(side), self.items
        # content rows read both sides and their flags (an inspection switches one off)
        inputs = ("text", "visual", "text_ok", "visual_ok") if side == "content" else (side,)
        key = (
            *(getattr(it, name).data_ptr() for name in inputs),
            proj.basis.data_ptr(),
            proj.basis._version,
        )
        if self._reduced_tables.get(side, (None,))[0] != key:
            n = len(it.seen)
            parts = [
                proj.reduce(self._side_rows(side, slice(s, s + REDUCE_CHUNK)))
                for s in range(0, n, REDUCE_CHUNK)
            ]
            width = proj.basis.shape[1]
            table = torch.cat(parts) if parts else torch.zeros(0, width, device=self.device)
            self._reduced_tables[side] = (key, table)
        return self._reduced_tables[side][1]

    def _profile_items(
        self, users: torch.Tensor, without: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The items behind the users' content profiles and the row of ``users`` each belongs
        to: their training items, ``without[b]`` left out (an item a user never had, as in a
        random probe batch, leaves nothing out)."""
        rows = self.profile_history[users.numpy()]
        owner = np.repeat(np.arange(len(users)), np.diff(rows.indptr))
        items = rows.indices.astype(np.int64)
        if without is not None:
            keep = items != without.cpu().numpy()[owner]
            owner, items = owner[keep], items[keep]
        return items, owner

    def _history_count(self, users: torch.Tensor) -> torch.Tensor:
        h = self.history
        return torch.from_numpy(np.diff(h.indptr)[users.numpy()].astype(np.float32)).to(self.device)

    def _history_sum(self, users: torch.Tensor) -> torch.Tensor:
        """Sum of the id embeddings of each user's training items: an embedding bag, whose
        gradient, like a lookup's, touches only those items' rows."""
        rows = self.history[users.numpy()]
        dev = self.device
        return nn.functional.embedding_bag(
            torch.from_numpy(rows.indices.astype(np.int64)).to(dev),
            self.item_emb.weight,
            torch.from_numpy(rows.indptr[:-1].astype(np.int64)).to(dev),
            mode="sum",
            per_sample_weights=torch.from_numpy(rows.data.astype(np.float32)).to(dev),
            sparse=self.item_emb.sparse,
        )
