"""The latent world: every user, item, interaction, text and cover plan, drawn up front.

Everything random is drawn here, each concern from its own stream (see
:mod:`multirec.data.synthetic.streams`); writing the tables and rendering the covers
only reads the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multirec.data.synthetic import streams
from multirec.data.synthetic.counts import item_counts
from multirec.data.synthetic.cover_art import topic_styles
from multirec.data.synthetic.defects import choose_cover_defects
from multirec.data.synthetic.degrees import item_degrees, item_topics, user_degrees
from multirec.data.synthetic.interactions import match, timestamps
from multirec.data.synthetic.item_text import item_texts
from multirec.data.synthetic.presets import SamplePreset


@dataclass(frozen=True)
class World:
    """Everything drawn before writing; arrays are indexed by item / user index."""

    item_ids: np.ndarray  # str
    user_ids: np.ndarray  # str
    item_topic: np.ndarray
    user_topic_weights: np.ndarray  # [n_users, n_topics]: the taste interactions are drawn from
    cover_topic: np.ndarray
    cover_defect: np.ndarray  # str, "" when the cover is fine
    cover_png: np.ndarray  # bool
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_time: np.ndarray
    styles: dict[str, np.ndarray]
    vague_text: np.ndarray  # bool: the item's title, tag and description carry no topic
    titles: list[str | None]
    tags: list[str | None]
    descriptions: list[str | None]
    counts: dict[str, np.ndarray]  # float with NaN for missing


def build_world(
    preset: SamplePreset, seed: int, misleading: float, broken: float, vague: float
) -> World:
    """Draw a sample of ``preset``'s size with the given misleading, broken and vague shares."""
    n_items, n_users, n_topics = preset.n_items, preset.n_users, preset.n_topics
    item_ids, user_ids = _ids(streams.stream(seed, streams.IDS), n_items, n_users)

    item_topic, rank = item_topics(streams.stream(seed, streams.ITEM_TOPICS), n_items, n_topics)
    item_degree = item_degrees(streams.stream(seed, streams.ITEM_DEGREES), preset, item_topic, rank)
    user_degree = user_degrees(streams.stream(seed, streams.USER_DEGREES), preset)
    users, items, taste = match(
        streams.stream(seed, streams.MATCHING), preset, item_topic, item_degree, user_degree
    )
    users, items, times = timestamps(
        streams.stream(seed, streams.TIMESTAMPS), users, items, n_users
    )

    cover_rng = streams.stream(seed, streams.COVER_PLAN)
    cover_topic = _cover_topics(cover_rng, item_topic, n_topics, misleading)
    cover_defect, cover_png = choose_cover_defects(cover_rng, n_items, broken)

    titles, tags, descriptions, vague_text = item_texts(
        streams.stream(seed, streams.TEXT),
        streams.stream(seed, streams.VAGUE_TEXT),
        item_topic,
        n_topics,
        broken,
        vague,
    )
    return World(
        item_ids=item_ids,
        user_ids=user_ids,
        item_topic=item_topic,
        user_topic_weights=taste,
        cover_topic=cover_topic,
        cover_defect=cover_defect,
        cover_png=cover_png,
        inter_user=users,
        inter_item=items,
        inter_time=times,
        styles=topic_styles(streams.stream(seed, streams.STYLES), n_topics),
        vague_text=vague_text,
        titles=titles,
        tags=tags,
        descriptions=descriptions,
        counts=item_counts(streams.stream(seed, streams.COUNTS), item_degree, broken),
    )


def _ids(rng: np.random.Generator, n_items: int, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct PixelRec-style ids: ``i`` and 6 digits for items, ``u`` and 8 for users."""
    item_ids = np.char.add("i", (rng.choice(900_000, n_items, replace=False) + 100_000).astype(str))
    user_ids = np.char.add(
        "u", (rng.choice(90_000_000, n_users, replace=False) + 10_000_000).astype(str)
    )
    return item_ids, user_ids


def _cover_topics(
    rng: np.random.Generator, item_topic: np.ndarray, n_topics: int, misleading: float
) -> np.ndarray:
    """The topic each cover is drawn in: the item's own, or for a ``misleading`` share another.

    Misleading covers are the paper's "clickbait thumbnails": they make images carry less
    signal than text.
    """
    n_items = len(item_topic)
    cover_topic = item_topic.copy()
    n_mis = round(misleading * n_items)
    mis = rng.choice(n_items, n_mis, replace=False)
    cover_topic[mis] = (item_topic[mis] + rng.integers(1, n_topics, n_mis)) % n_topics
    return cover_topic
