"""``MultimodalRecommender``: the paper's model as a LightningModule, with two scoring designs.

User and item ids, visual, text, tag and numerical features are each projected into a
shared space of dimension ``dim``: user-side tokens (id, mean history, content profiles) and
item-side tokens (id, cover, text, tag, counts). A modality switched off has no parameters.
``scoring`` chooses how they become a score:

* ``pairwise`` (the paper's): the module chosen in the ``fusion`` config group fuses the user's
  and the item's tokens together and an MLP head gives a logit, so every (user, item) pair runs
  the fusion -- about 33k scores/s on two cores, hours for a real catalogue's full ranking.
* ``two_tower``: the fusion runs over the item-side tokens into one item vector and over the
  user-side tokens into one user vector; the score is their dot product plus an item bias (on
  the log of the item's training share, with ``popularity_prior``) and, with ``match``,
  per-modality agreement (user id and mean history with item id, visual profile with cover,
  text profile with text, or content profile with content where cover and text share one
  set of prototypes; a prototype side as a topic mixture, the log of the user's smoothed
  share of the item's prototype). All of it is one dot product of
  concatenated vectors, so the whole catalogue's item vectors are computed once per set of
  weights and full ranking is a matrix product, at BPR-MF's cost. The id agreement is matrix
  factorisation itself, so the id path is never weaker than BPR-MF's model; content adds to
  it.

The paper's exact recipe is ``model.scoring=pairwise loss=bce model.user_profile=false
model.match=false model.prototypes=0 model.use_tags=true model.use_numeric=true``.
"""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch import nn

from multirec.config import build
from multirec.errors import ConfigError, MultirecError
from multirec.models.neural import NeuralRecommender, register
from multirec.models.optim import RowAdamW
from multirec.models.pairwise import PairwiseScoring
from multirec.models.tokens import ModalityTokens
from multirec.models.two_tower import TwoTowerScoring

SCORINGS = ("pairwise", "two_tower")
# parameters of the two-tower fusion towers, which decay by model.tower_weight_decay
TOWERS = ("user_fusion.", "item_fusion.", "user_out.", "item_out.")


@register("multimodal")
class MultimodalRecommender(ModalityTokens, PairwiseScoring, TwoTowerScoring, NeuralRecommender):
    """See the module docstring. ``fusion`` and ``loss`` are their config groups' nodes
    (``_target_`` and settings); they are built here so that checkpoints store them as data.
    Tokens, pairwise and two-tower scoring live in their own modules, as mixins."""

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
        item_bias: bool = True,
        popularity_prior: bool = False,
        user_profile: bool = True,
        match: bool = True,
        use_tags: bool = True,
        use_numeric: bool = True,
        projection_hidden: int = 256,
        prototypes: int = 0,
        joint_prototypes: bool = False,
        audience: bool = False,
        head_hidden: int = 128,
        dropout: float = 0.1,
        id_dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        tower_weight_decay: float = 0.0,
        provenance: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if scoring not in SCORINGS:
            raise ConfigError(f"model.scoring={scoring!r} is unknown; valid: {', '.join(SCORINGS)}")
        self._build_tokens()
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
        self._reduced_tables: dict[str, tuple] = {}  # prototype sides' features on their basis
        self._audience_tables: dict[str, tuple] = {}  # their users' tastes per item (two_tower)
        self.history: sp.csr_matrix | None = None  # binary training matrix, for user_history
        self.profile_history: sp.csr_matrix | None = None  # the same, for content profiles
        self.train_matrix: sp.csr_matrix | None = None  # accidental hits among shared negatives
        self.item_log_share: torch.Tensor | None = None  # log of each item's share of positives
        self.listeners: torch.Tensor | None = None  # each item's training users (two_tower)
        self.draw_probabilities: torch.Tensor | None = None  # the negative sampler's, if known
        self._table: tuple[Any, ...] | None = None  # cached item vectors (two_tower, eval mode)

    @property
    def two_tower(self) -> bool:
        return self.hparams.scoring == "two_tower"

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
            uv, _ = self._user_vectors(users)
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
    def setup(self, stage: str) -> None:
        """Under DDP the id embeddings' gradients are dense (NCCL cannot all-reduce sparse
        ones), and RowAdamW updates the same rows; set before the strategy wraps the model,
        which reads it."""
        if dist.is_available() and dist.is_initialized() and self.hparams.use_ids:
            self.user_emb.sparse = self.item_emb.sparse = False

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
        extra = self._alignment_tokens(positives) if self.loss_fn.needs_alignment else {}
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
        """AdamW, fused into one kernel per step where torch has one (CPU and CUDA), updating
        only the touched rows of the id embeddings (:class:`~multirec.models.optim.RowAdamW`).

        Two-tower: the fusion towers decay by ``tower_weight_decay`` instead, since on sparse
        data they memorise users and items where the dot products generalise.
        """
        hp = self.hparams
        tables = ("user_emb.", "item_emb.")
        groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            tower = self.two_tower and name.startswith(TOWERS)
            decay = hp.tower_weight_decay if tower else hp.weight_decay
            if name.rpartition(".")[2].startswith("log_"):
                decay = 0.0  # a log-space scale: decay would pull it to 1, not to nothing
            groups.setdefault((decay, name.startswith(tables)), []).append(p)
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        return RowAdamW(
            [{"params": ps, "weight_decay": wd, "rows": rows} for (wd, rows), ps in groups.items()],
            lr=hp.lr,
            fused=fused or None,
        )
