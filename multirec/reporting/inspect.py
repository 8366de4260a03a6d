"""Ask a trained checkpoint questions: what it recommends, what its fusion weighs, where
it is most right and most wrong, and how much each modality moves its scores.

Models come from :func:`multirec.pipeline.checkpoints.load_model`, which finds the prepared
dataset a checkpoint was trained on by itself and refuses mismatched feature caches.
Probabilities are ``sigmoid(score)``: the model's head emits a logit, so
with the ``bce`` losses they estimate P(interaction); with ``bpr`` only their order means
anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError
from multirec.eval.candidates import CandidateLists
from multirec.models.base import Recommender, mask_excluded

if TYPE_CHECKING:  # importing Lightning takes seconds; a bad user id or path should not wait for it
    from multirec.models.recommender import MultimodalRecommender

LIST_BATCH = 512  # candidate lists per model call (bounds memory; the fusion weights are per call)


# -- recommendations --------------------------------------------------------------------
def user_index(ds: PreparedDataset, user_id: str) -> int:
    """Index of an external user id; unknown ids are a one-line error naming the id."""
    hits = np.flatnonzero(ds.user_ids == str(user_id))
    if hits.size == 0:
        examples = ", ".join(map(str, ds.user_ids[:3]))
        raise ConfigError(
            f"user {user_id!r} is not in the prepared dataset {ds.root} ({ds.n_users} users, e.g. {examples}); "
            "pass an external user id from its users.parquet"
        )
    return int(hits[0])


def cold_mask(ds: PreparedDataset) -> np.ndarray:
    """True for items with no training interaction (the model scores them from content only)."""
    return ~ds.seen_items()


def top_k(
    model: Recommender,
    ds: PreparedDataset,
    users: np.ndarray,
    k: int = 10,
    include_cold: bool = False,
    batch: int = 1024,
) -> pl.DataFrame:
    """Top-``k`` item indices and scores of each user index in ``users``, scored ``batch``
    users per model call, each user's training items excluded (cold items too unless
    ``include_cold``). Columns ``user, rank, item, score``; a user with fewer than ``k``
    items left gets fewer rows, never an excluded item."""
    if k < 1:
        raise ConfigError(f"k must be a positive integer, got {k}")
    train = ds.interaction_matrix("train").tocsr()
    cold = torch.from_numpy(cold_mask(ds))
    parts = []
    for start in range(0, len(users), batch):
        chunk = np.asarray(users[start : start + batch], dtype=np.int64)
        with torch.no_grad():
            scores = model.score_all(torch.from_numpy(chunk)).float().cpu()
        mask_excluded(scores, train, chunk)
        if not include_cold:
            scores[:, cold] = float("-inf")
        top = torch.topk(scores, k=min(k, ds.n_items), dim=1)
        keep = torch.isfinite(top.values).numpy()
        rows, ranks = np.nonzero(keep)
        parts.append(
            pl.DataFrame(
                {
                    "user": chunk[rows],
                    "rank": ranks + 1,
                    "item": top.indices.numpy()[keep],
                    "score": top.values.numpy()[keep].astype(np.float64),
                }
            )
        )
    return pl.concat(parts) if parts else pl.DataFrame()


def recommend(
    model: Recommender, ds: PreparedDataset, user_id: str, k: int = 10, include_cold: bool = False
) -> pl.DataFrame:
    """Top-``k`` items for ``user_id``, the user's training items excluded.

    Items without training interactions (``cold``) are left out unless ``include_cold``:
    the model scores them from their content (cover, text, tag, counts) with a shared id
    vector, which is what makes new items recommendable at all. ``held_out`` marks items
    the user interacted with in validation or test -- hits, when inspecting a model.
    """
    u = user_index(ds, user_id)
    top = top_k(model, ds, np.array([u]), k, include_cold)
    idx, val = top["item"].to_numpy(), top["score"].to_numpy()
    held_out = ds.interaction_matrix("valid", "test")[u].toarray().ravel().astype(bool)
    return pl.DataFrame(
        {
            "rank": top["rank"].to_numpy(),
            "item_id": ds.item_ids[idx],
            "score": val,
            "probability": _sigmoid(val),
            "cold": cold_mask(ds)[idx],
            "held_out": held_out[idx],
            "title": ds.items["title"].to_numpy()[idx],
        }
    )


def recommend_all(
    model: Recommender,
    ds: PreparedDataset,
    user_ids: list[str] | None = None,
    k: int = 10,
    include_cold: bool = False,
) -> pl.DataFrame:
    """Top-``k`` items of every user (``user_ids`` None) or of the named ones, as external
    ids: columns ``user_id, rank, item_id, score``, users in the order given."""
    users = (
        np.arange(ds.n_users)
        if user_ids is None
        else np.array([user_index(ds, u) for u in user_ids], dtype=np.int64)
    )
    top = top_k(model, ds, users, k, include_cold)
    return pl.DataFrame(
        {
            "user_id": ds.user_ids[top["user"].to_numpy()],
            "rank": top["rank"].to_numpy(),
            "item_id": ds.item_ids[top["item"].to_numpy()],
            "score": top["score"].to_numpy(),
        }
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# -- scoring saved candidate lists --------------------------------------------------------
def subsample(lists: CandidateLists, max_lists: int | None, seed: int = 0) -> CandidateLists:
    """At most ``max_lists`` lists, drawn without replacement with a fixed seed (order kept)."""
    n = len(lists)
    if max_lists is None or n <= max_lists:
        return lists
    keep = np.sort(np.random.default_rng(seed).choice(n, size=max_lists, replace=False))
    return CandidateLists(lists.users[keep], lists.items[keep], lists.path)


def _batches(lists: CandidateLists) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for s in range(0, len(lists), LIST_BATCH):
        yield (
            torch.from_numpy(lists.users[s : s + LIST_BATCH]),
            torch.from_numpy(lists.items[s : s + LIST_BATCH]),
        )


def candidate_scores(
    model: MultimodalRecommender, ds: PreparedDataset, lists: CandidateLists
) -> pl.DataFrame:
    """One row per (list, candidate): ids, whether it is the held-out positive, score, probability.

    ``rank`` is the candidate's position in its list by score (1 = top; ties by order).
    """
    parts = [model.score(u, it).numpy() for u, it in _batches(lists)]
    scores = (
        np.concatenate(parts) if parts else np.zeros((0, lists.items.shape[1]), dtype=np.float32)
    )
    return _pairs_frame(ds, lists, scores)


def _pairs_frame(ds: PreparedDataset, lists: CandidateLists, scores: np.ndarray) -> pl.DataFrame:
    n, c = lists.items.shape
    rank = np.empty_like(lists.items)
    np.put_along_axis(
        rank,
        np.argsort(-scores, axis=1, kind="stable"),
        np.arange(1, c + 1)[None, :].repeat(n, 0),
        1,
    )
    users = np.repeat(lists.users, c)
    items = lists.items.ravel()
    return pl.DataFrame(
        {
            "list": np.repeat(np.arange(n), c),
            "user_idx": users,
            "user_id": ds.user_ids[users],
            "item_idx": items,
            "item_id": ds.item_ids[items],
            "positive": np.tile(np.arange(c) == 0, n),
            "score": scores.ravel().astype(np.float64),
            "probability": _sigmoid(scores.ravel()),
            "rank": rank.ravel(),
        }
    )


def prediction_examples(
    pairs: pl.DataFrame, ds: PreparedDataset, n: int = 4
) -> dict[str, pl.DataFrame]:
    """The paper's Figure 2 material from :func:`candidate_scores`, each item in one group
    only (an item can be one user's best hit and another's miss), with the user it was
    scored for:

    * ``best``: held-out positives the model gave the highest probability;
    * ``missed``: held-out positives with the lowest probability;
    * ``distractors``: never-interacted candidates with the highest probability (the
      paper's "worst result, acting as a strong distractor").
    """
    info = ds.items.select("item_id", "title", "cover_path")
    pos, neg = pairs.filter(pl.col("positive")), pairs.filter(~pl.col("positive"))
    picks = {
        "best": pos.sort("probability", descending=True),
        "missed": pos.sort("probability"),
        "distractors": neg.sort("probability", descending=True),
    }
    out: dict[str, pl.DataFrame] = {}
    shown: list[str] = []
    for name, frame in picks.items():
        out[name] = (
            frame.filter(~pl.col("item_id").is_in(shown))
            .unique("item_id", keep="first", maintain_order=True)
            .head(n)
            .join(info, on="item_id", how="left")
        )
        shown += out[name]["item_id"].to_list()
    return out


# -- what the fusion weighs, and what each modality contributes ----------------------------
def modality_weights(
    model: MultimodalRecommender, ds: PreparedDataset, lists: CandidateLists
) -> pl.DataFrame | None:
    """:func:`candidate_scores` plus one ``w_<modality>`` column per fusion token, or None when
    the fusion has no weights (concatenation).

    For attention fusion a weight is the attention each token receives in the last layer
    (averaged over heads and queries, or the CLS query's when pooling is ``cls``); for
    gated fusion the gate. The tokens are ``model.modalities`` in order (``user`` first).
    """
    weights, scores = [], []
    for u, it in _batches(lists):
        w = model.modality_weights(u, it)
        if w is None:
            return None
        weights.append(w.detach().float().cpu().reshape(-1, w.shape[-1]).numpy())
        scores.append(model.score(u, it).numpy())
    if not weights:
        return None
    frame = _pairs_frame(ds, lists, np.concatenate(scores))
    w = np.concatenate(weights)
    return frame.with_columns(pl.Series(f"w_{m}", w[:, j]) for j, m in enumerate(model.modalities))


@contextmanager
def without(model: MultimodalRecommender, modality: str) -> Iterator[None]:
    """Score as if every candidate item's ``visual`` or ``text`` input were missing.

    The model then uses its learned 'missing' token for that modality -- what it does for
    an item whose cover or text could not be encoded -- so the score difference is what
    the item's cover (or text) contributes for that (user, item) pair. The user's side
    (ids and profiles built when the items were attached) is left as it is.
    """
    items = model.items
    flag = f"{modality}_ok"
    if items is None or getattr(items, flag, None) is None:
        raise ConfigError(
            f"the model has no {modality} input to switch off (its modalities: {', '.join(model.modalities)})"
        )
    model.items = replace(items, **{flag: torch.zeros_like(getattr(items, flag))})
    try:
        yield
    finally:
        model.items = items


def modality_contributions(
    model: MultimodalRecommender, ds: PreparedDataset, lists: CandidateLists
) -> pl.DataFrame:
    """:func:`candidate_scores` plus, for ``visual`` and ``text`` where the model has them:

    * ``delta_<m>`` = score - score without modality ``m``;
    * ``lift_<m>`` = ``delta_<m>`` minus its mean over the candidates of the same list: what
      the input does to the item's place in its ranking. A delta shares an offset across
      all items (the learned 'missing' token moves every score alike), so its sign says
      little; the lift's sign says whether the input pushed the item up or down the list;
    * with both, ``disagree``: cover and text push the item in opposite directions.
    """
    frame = candidate_scores(model, ds, lists)
    # the model's inputs, not its tokens: with joint prototypes cover and text share one
    present = [m for m in ("visual", "text") if getattr(model.items, f"{m}_ok", None) is not None]
    for m in present:
        with without(model, m):
            alone = candidate_scores(model, ds, lists)["score"]
        delta = pl.col("score") - alone
        frame = frame.with_columns(delta.alias(f"delta_{m}")).with_columns(
            (pl.col(f"delta_{m}") - pl.col(f"delta_{m}").mean().over("list")).alias(f"lift_{m}")
        )
    if len(present) == 2:
        frame = frame.with_columns(
            ((pl.col("lift_visual") > 0) != (pl.col("lift_text") > 0)).alias("disagree")
        )
    return frame


def sample_truth(ds: PreparedDataset) -> pl.DataFrame | None:
    """The synthetic sample's ground truth per item (``topic, cover_topic, misleading``), read
    from ``_topics.csv`` in the raw data folder; None for real data, which has none."""
    path = Path(ds.manifest["settings"]["root"]) / "_topics.csv"
    if not path.is_file():
        return None
    return pl.read_csv(path, schema_overrides={"item_id": pl.String}, glob=False).select(
        "item_id", "topic", "cover_topic", "misleading"
    )
