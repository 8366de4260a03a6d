"""Synthetic PixelRec-format datasets with a known latent structure.

Why this exists: a fresh clone must run end to end without downloading PixelRec, and the
sample must be *informative* -- a content-aware recommender has to be able to beat
popularity on it, otherwise every comparison run on the sample is meaningless. So the data
is generated from latent topics:

* every item has a topic; its title, tag and description words come mostly from that
  topic's vocabulary (pseudo words built from topic-specific roots, so sub-word tokenisers
  see shared pieces), mixed with shared English filler words;
* its cover is drawn with the topic's pattern, palette and shape plus per-item jitter and
  noise; a share of covers is *misleading* (drawn in another topic's style, the paper's
  "clickbait thumbnail"), so images carry less signal than text;
* users prefer a few topics: about 85 % of their interactions fall in them, the rest is
  popularity-driven noise; item popularity is Zipf-like within each topic;
* per-user and per-item counts follow exact degree sequences (every user has at least 5
  interactions; the ``pixelrec50k`` preset reproduces the paper's Table 1 totals, means
  and maxima) and interactions are unique (user, item) pairs;
* a small share of inputs is broken on purpose (missing, corrupt, truncated and tiny
  covers; grayscale, CMYK, RGBA, palette and 16-bit covers; empty titles and texts; HTML in
  descriptions; missing counts) so the default run exercises the validation path.
  ``broken_share=0`` gives a clean dataset.

Output directory (PixelRec's layout, see ``shared/notes/pixelrec-format.md``)::

    interactions.csv   item_id,user_id,timestamp   (sorted by timestamp; increasing per user)
    item_info.csv      item_id,view_number,...,barrage_number,title,tag,description
    covers/            {item_id}.jpg, some {item_id}.png (absent when covers=False)
    _topics.csv        ground truth for analysis, not part of PixelRec:
                       item_id,topic,cover_topic,misleading,cover_defect
                       (cover_defect: empty, or one of COVER_DEFECTS)
    _sample.json       the generator's settings and counts, so callers can tell whether an
                       existing sample matches what they asked for

The same seed gives byte-identical files: every random stream is a numpy Generator seeded
from ``(seed, stream id)`` and each cover from ``(seed, stream id, item index)``, so the
result does not depend on the number of worker processes.
"""

from __future__ import annotations

import colorsys
import io
import json
import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from scipy.special import ndtri
from tqdm import tqdm

from multirec.data.config import COUNT_COLUMNS
from multirec.errors import ConfigError
from multirec.io import atomic_dir

log = logging.getLogger(__name__)

# Defects injected into covers. The first four make a cover unusable; the rest are valid
# images in modes a loader has to convert to RGB.
COVER_DEFECTS = (
    "missing",
    "corrupt",
    "truncated",
    "too_small",
    "grayscale",
    "cmyk",
    "rgba",
    "palette",
    "16bit",
)
PNG_DEFECTS = frozenset({"rgba", "palette", "16bit"})

MIN_USER_INTERACTIONS = 5
IN_TOPIC_SHARE = 0.85  # share of a user's interactions drawn from their preferred topics
PNG_SHARE = 0.03  # valid RGB covers saved as .png, as in real dumps
# A user's expected interactions within one topic stay below this share of the topic's
# items, so heavy users spread over more topics instead of exhausting one.
TOPIC_CAPACITY = 0.5
PERIOD = (1_630_454_400, 1_667_174_400)  # 2021-09-01 .. 2022-10-31 UTC, PixelRec's span
COVER_CHUNK = 256
# Below this many covers one process is fast enough (small: ~1,100 covers in seconds), so
# only big samples pay for worker start-up and need the caller's ``__main__`` guard.
POOL_MIN_COVERS = 10_000


@dataclass(frozen=True)
class SamplePreset:
    """Size and shape of one sample; degree sequences hit these totals and maxima exactly."""

    n_users: int
    n_items: int
    n_interactions: int
    max_user: int  # interactions of the most active user
    max_item: int  # interactions of the most popular item
    min_item: int  # interactions of the least popular item (users always have >= 5)
    n_topics: int
    cover_size: int  # pixels, square
    misleading_share: float = 0.3
    broken_share: float = 0.02


PRESETS: dict[str, SamplePreset] = {
    # Seconds; tests. Items start at 5 interactions so a 5-core keeps most users.
    "tiny": SamplePreset(60, 80, 600, 25, 20, 5, 5, 64),
    # Enough users for stable metrics, small enough to train in seconds: the learning tests.
    "mini": SamplePreset(300, 300, 7_500, 80, 80, 5, 8, 64),
    # The README default: the main job (cover extraction at ~15 images/s plus training)
    # takes a few minutes on 2 cores.
    "small": SamplePreset(900, 1_100, 19_800, 150, 150, 5, 18, 128),
    # The paper's Table 1 (PixelRec50K): 19.79 per user, 11.94 per item on average.
    "pixelrec50k": SamplePreset(50_000, 82_865, 989_494, 434, 146, 1, 24, 64),
}

# Shared filler words: every topic's text uses them, so text is not trivially separable.
_FILLER_TEXT = (
    "the a my new best top first last how why what this day night video live part full "
    "official episode vlog clip moment great little big amazing funny real today quick easy "
    "ultimate daily weekly story guide review challenge highlights together again more "
    "never every with without about from into"
)
_FILLER = tuple(_FILLER_TEXT.split())
_GENERIC_TAGS = ("daily", "funny", "vlog", "life", "recommend")
_ONSETS = list("bcdfghjklmnprstvwz") + ["br", "ch", "dr", "gl", "kr", "pl", "sh", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "", "", "n", "r", "s", "l", "m", "k", "x"]
_HTML_SNIPPETS = ("<br>", "<br/>", "<b>new</b>", "&amp;", "<p>", "</p>", '<a href="#">link</a>')


# ----------------------------------------------------------------------------------------
# public entry


def generate_sample(
    out: Path,
    size: str = "small",
    seed: int = 0,
    misleading_share: float | None = None,
    broken_share: float | None = None,
    covers: bool = True,
    progress: bool = True,
) -> Path:
    """Write a PixelRec-format sample to ``out`` atomically and return ``out``.

    ``misleading_share`` and ``broken_share`` default to the preset's values (0.3 and
    0.02). ``covers=False`` writes only the tables (benchmarks of the tabular pipeline).
    ``out`` is replaced only if multirec created it. Big samples (``pixelrec50k``) draw
    their covers in spawned worker processes, so a script calling this for them needs the
    usual ``if __name__ == "__main__":`` guard.
    """
    if size not in PRESETS:
        raise ConfigError(
            f"unknown sample size {size!r} (key size); valid sizes: {', '.join(PRESETS)}"
        )
    preset = PRESETS[size]
    misleading = _share("misleading_share", misleading_share, preset.misleading_share)
    broken = _share("broken_share", broken_share, preset.broken_share)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer")

    out = Path(out)
    world = _build_world(preset, seed, misleading, broken)
    with atomic_dir(out) as tmp:
        _write_tables(tmp, world)
        if covers:
            _write_covers(tmp / "covers", world, seed, preset.cover_size, progress)
        meta = {
            "generator": "multirec.data.sample",
            "version": 1,
            "size": size,
            "seed": seed,
            "misleading_share": misleading,
            "broken_share": broken,
            "covers": covers,
            "preset": asdict(preset),
            "n_users": preset.n_users,
            "n_items": preset.n_items,
            "n_interactions": int(len(world.inter_user)),
        }
        (tmp / "_sample.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info(
        "wrote %s sample to %s: %d users, %d items, %d interactions",
        size,
        out,
        preset.n_users,
        preset.n_items,
        len(world.inter_user),
    )
    return out


def _share(key: str, value: float | None, default: float) -> float:
    """``value`` as a share in [0, 1] (``None``: the preset's ``default``)."""
    if value is None:
        return default
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = math.nan
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"{key}={value!r} is not a share; use a number between 0 and 1 (or null)")
    return share


# ----------------------------------------------------------------------------------------
# the latent world


@dataclass(frozen=True)
class _World:
    """Everything drawn before writing; arrays are indexed by item / user index."""

    item_ids: np.ndarray  # str
    user_ids: np.ndarray  # str
    item_topic: np.ndarray
    cover_topic: np.ndarray
    cover_defect: np.ndarray  # str, "" when the cover is fine
    cover_png: np.ndarray  # bool
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_time: np.ndarray
    styles: dict[str, np.ndarray]
    titles: list[str | None]
    tags: list[str | None]
    descriptions: list[str | None]
    counts: dict[str, np.ndarray]  # float with NaN for missing


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _build_world(preset: SamplePreset, seed: int, misleading: float, broken: float) -> _World:
    n_items, n_users, n_topics = preset.n_items, preset.n_users, preset.n_topics
    ids_rng = _rng(seed, 1)
    item_ids = np.char.add(
        "i", (ids_rng.choice(900_000, n_items, replace=False) + 100_000).astype(str)
    )
    user_ids = np.char.add(
        "u", (ids_rng.choice(90_000_000, n_users, replace=False) + 10_000_000).astype(str)
    )

    item_topic, rank = _item_topics(_rng(seed, 2), n_items, n_topics)
    item_degree = _item_degrees(_rng(seed, 3), preset, item_topic, rank)
    user_degree = _user_degrees(_rng(seed, 4), preset)
    users, items = _match(_rng(seed, 5), preset, item_topic, item_degree, user_degree)
    users, items, times = _timestamps(_rng(seed, 6), users, items, n_users)

    cover_rng = _rng(seed, 7)
    cover_topic = item_topic.copy()
    n_mis = round(misleading * n_items)
    mis = cover_rng.choice(n_items, n_mis, replace=False)
    cover_topic[mis] = (item_topic[mis] + cover_rng.integers(1, n_topics, n_mis)) % n_topics
    cover_defect, cover_png = _cover_defects(cover_rng, n_items, broken)

    titles, tags, descriptions = _texts(_rng(seed, 8), item_topic, n_topics, broken)
    counts = _counts(_rng(seed, 9), item_degree, broken)
    return _World(
        item_ids=item_ids,
        user_ids=user_ids,
        item_topic=item_topic,
        cover_topic=cover_topic,
        cover_defect=cover_defect,
        cover_png=cover_png,
        inter_user=users,
        inter_item=items,
        inter_time=times,
        styles=_topic_styles(_rng(seed, 10), n_topics),
        titles=titles,
        tags=tags,
        descriptions=descriptions,
        counts=counts,
    )


def _item_topics(
    rng: np.random.Generator, n_items: int, n_topics: int
) -> tuple[np.ndarray, np.ndarray]:
    """Topic of every item (topics of mildly different sizes) and its rank within the topic."""
    sizes = 1 + _integer_split(rng.dirichlet(np.full(n_topics, 10.0)), n_items - n_topics)
    topic = rng.permutation(np.repeat(np.arange(n_topics), sizes))
    order = np.argsort(topic, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(n_items, dtype=np.int64)
    rank[order] = np.arange(n_items) - np.repeat(starts, sizes)
    return topic, rank


def _integer_split(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` summing exactly to ``total`` (largest remainder)."""
    raw = weights / weights.sum() * total
    out = np.floor(raw).astype(np.int64)
    short = total - int(out.sum())
    if short:
        out[np.argsort(-(raw - out), kind="stable")[:short]] += 1
    return out


def _degree_sequence(
    rng: np.random.Generator,
    weights_for: Callable[[float], np.ndarray],
    lo: float,
    hi: float,
    n: int,
    total: int,
    minimum: int,
    maximum: int,
) -> np.ndarray:
    """Integer degrees ``minimum + share of the rest`` with exact sum and exact maximum.

    ``weights_for(p)`` gives the shape for a parameter ``p``; ``p`` is found by bisection
    so that the largest degree equals ``maximum`` (the ratio max/sum grows with ``p``).
    """
    rest = total - n * minimum
    target = (maximum - minimum) / rest
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        w = weights_for(mid)
        if w.max() / w.sum() < target:
            lo = mid
        else:
            hi = mid
    deg = minimum + _integer_split(weights_for(0.5 * (lo + hi)), rest)
    top = int(np.argmax(deg))
    diff = maximum - int(deg[top])
    if diff:
        # Move the rounding difference (at most a few units) onto other items with slack.
        deg[top] = maximum
        sign = 1 if diff > 0 else -1
        slack = (
            np.flatnonzero((deg > minimum) & (deg < maximum - 1))
            if sign > 0
            else np.flatnonzero(deg < maximum - 1)
        )
        deg[rng.choice(slack, abs(diff), replace=False)] -= sign
    return deg


def _user_degrees(rng: np.random.Generator, preset: SamplePreset) -> np.ndarray:
    """Log-normal user activity (deterministic quantiles), shuffled over users."""
    n = preset.n_users
    z = ndtri((np.arange(n) + 0.5) / n)
    deg = _degree_sequence(
        rng,
        lambda s: np.exp(s * z),
        0.0,
        6.0,
        n,
        preset.n_interactions,
        MIN_USER_INTERACTIONS,
        preset.max_user,
    )
    return rng.permutation(deg)


def _item_degrees(
    rng: np.random.Generator, preset: SamplePreset, topic: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """Zipf-like popularity within each topic, with a little log-normal jitter."""
    jitter = np.exp(rng.normal(0.0, 0.25, preset.n_items))
    base = rank + 1.0
    return _degree_sequence(
        rng,
        lambda a: jitter * base**-a,
        0.0,
        8.0,
        preset.n_items,
        preset.n_interactions,
        preset.min_item,
        preset.max_item,
    )


def _match(
    rng: np.random.Generator,
    preset: SamplePreset,
    item_topic: np.ndarray,
    item_degree: np.ndarray,
    user_degree: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Pair user and item "stubs" so both degree sequences hold exactly.

    Each user stub is labelled with one of the user's preferred topics (or as noise); stubs
    of topic t are matched at random with item stubs of topic t, the leftover item stubs
    with the noise stubs -- so noise lands on items in proportion to their popularity.
    """
    n_users, n_items, n_topics = preset.n_users, preset.n_items, preset.n_topics
    total = int(user_degree.sum())
    topic_mass = np.bincount(item_topic, weights=item_degree, minlength=n_topics)
    topic_items = np.bincount(item_topic, minlength=n_topics)

    # Preferred topics: 1-3, more for heavy users so no topic is asked for more items than
    # it holds; drawn in proportion to topic mass (Gumbel top-k).
    n_pref = rng.integers(1, 4, n_users)
    need = np.ceil(user_degree * IN_TOPIC_SHARE / (TOPIC_CAPACITY * topic_items.min())).astype(
        np.int64
    )
    n_pref = np.clip(np.maximum(n_pref, need), 1, n_topics)
    k_max = int(n_pref.max())
    keys = np.log(topic_mass / topic_mass.sum()) - np.log(-np.log(rng.random((n_users, n_topics))))
    pref = np.argsort(-keys, axis=1)[:, :k_max]
    pref_w = rng.gamma(1.0, size=(n_users, k_max)) * (np.arange(k_max) < n_pref[:, None])
    pref_cum = np.cumsum(pref_w / pref_w.sum(axis=1, keepdims=True), axis=1)

    stub_user = np.repeat(np.arange(n_users), user_degree)
    pick = (rng.random(total)[:, None] > pref_cum[stub_user]).sum(axis=1)
    pick = np.minimum(pick, n_pref[stub_user] - 1)  # guards the cumsum's rounding at 1.0
    stub_topic = np.where(rng.random(total) < IN_TOPIC_SHARE, pref[stub_user, pick], n_topics)

    # A topic asked for more stubs than its items hold gives the excess to noise.
    order = np.lexsort((rng.random(total), stub_topic))
    sorted_topic = stub_topic[order]
    asked = np.bincount(sorted_topic, minlength=n_topics + 1)
    pos = np.arange(total) - np.repeat(np.cumsum(asked) - asked, asked)
    capacity = np.append(topic_mass.astype(np.int64), total)
    over = pos >= capacity[sorted_topic]
    stub_topic[order[over]] = n_topics
    in_topic = np.bincount(stub_topic, minlength=n_topics + 1)[:n_topics]

    # Item stubs grouped by topic in random order; the first in_topic[t] of topic t are
    # matched with users' topic-t stubs, the rest go to the noise pool.
    item_stub = np.repeat(np.arange(n_items), item_degree)
    item_stub = item_stub[np.lexsort((rng.random(total), item_topic[item_stub]))]
    stub_item_topic = item_topic[item_stub]
    per_topic = np.bincount(stub_item_topic, minlength=n_topics)
    ipos = np.arange(total) - np.repeat(np.cumsum(per_topic) - per_topic, per_topic)
    matched = ipos < in_topic[stub_item_topic]

    user_order = np.lexsort((rng.random(total), stub_topic))
    users_sorted = stub_user[user_order]
    n_in = int(in_topic.sum())
    items = np.concatenate([item_stub[matched], rng.permutation(item_stub[~matched])])
    group = np.concatenate([stub_item_topic[matched], np.full(total - n_in, n_topics)])
    return users_sorted, _remove_duplicates(rng, users_sorted, items, group, n_items)


def _remove_duplicates(
    rng: np.random.Generator, users: np.ndarray, items: np.ndarray, group: np.ndarray, n_items: int
) -> np.ndarray:
    """Swap items between rows until every (user, item) pair is unique.

    Swaps keep both degree sequences. Partners come from the same group (topic or noise)
    first, so the topic structure survives; later rounds allow any partner.
    """
    items = items.copy()
    by_group = np.argsort(group, kind="stable")
    sizes = np.bincount(group)
    starts = np.cumsum(sizes) - sizes
    for round_ in range(500):
        key = users.astype(np.int64) * n_items + items
        order = np.argsort(key, kind="stable")
        dup = order[1:][key[order][1:] == key[order][:-1]]
        if not len(dup):
            return items
        if round_ < 20:
            g = group[dup]
            partner = by_group[starts[g] + (rng.random(len(dup)) * sizes[g]).astype(np.int64)]
        else:
            partner = rng.integers(0, len(items), len(dup))
        ok = ~np.isin(partner, dup) & (users[partner] != users[dup])
        dup, partner = dup[ok], partner[ok]
        _, first = np.unique(partner, return_index=True)
        dup, partner = dup[first], partner[first]
        items[dup], items[partner] = items[partner], items[dup].copy()
    raise RuntimeError("could not make interactions unique; the preset is infeasible")


def _timestamps(
    rng: np.random.Generator, users: np.ndarray, items: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user activity windows inside PixelRec's period; strictly increasing per user.

    Returns the interactions sorted by time (then user index), as a log would be.
    """
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    deg = np.bincount(users, minlength=n_users)
    span_total = PERIOD[1] - PERIOD[0] - int(deg.max()) - 1
    span = (rng.uniform(0.02, 1.0, n_users) * span_total).astype(np.int64)
    start = PERIOD[0] + (rng.random(n_users) * (span_total - span)).astype(np.int64)
    offset = (rng.random(len(users)) * span[users]).astype(np.int64)
    within = np.lexsort((offset, users))  # users already sorted: sorts offsets per user
    users, items, offset = users[within], items[within], offset[within]
    first = np.cumsum(deg) - deg
    position = np.arange(len(users)) - np.repeat(first, deg)
    times = start[users] + offset + position  # sorted offsets + position: strictly increasing
    log_order = np.lexsort((users, times))
    return users[log_order], items[log_order], times[log_order]


def _cover_defects(
    rng: np.random.Generator, n_items: int, broken: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which items get which cover defect, and which valid covers are saved as PNG.

    Every defect kind appears ``ceil(broken * n_items / kinds)`` times (so even ``tiny``
    exercises every kind; about ``broken`` of all items overall).
    """
    per_kind = math.ceil(broken * n_items / len(COVER_DEFECTS)) if broken > 0 else 0
    n_png = round(PNG_SHARE * n_items)
    chosen = rng.permutation(n_items)
    defect = np.full(n_items, "", dtype=object)
    n_defect = min(per_kind * len(COVER_DEFECTS), n_items)
    defect[chosen[:n_defect]] = np.repeat(np.array(COVER_DEFECTS, dtype=object), per_kind)[
        :n_defect
    ]
    png = np.zeros(n_items, dtype=bool)
    png[chosen[n_defect : n_defect + n_png]] = True
    png[np.isin(defect, list(PNG_DEFECTS))] = True
    return defect.astype(str), png


# ----------------------------------------------------------------------------------------
# text and counts


def _vocabularies(
    rng: np.random.Generator, n_topics: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Per topic: 40 pseudo words sharing 4 topic-specific roots, and 2 tags."""
    seen: set[str] = set(_FILLER) | set(_GENERIC_TAGS)

    def fresh(make: Callable[[], str]) -> str:
        while True:
            word = make()
            if word not in seen:
                seen.add(word)
                return word

    def syllable() -> str:
        return str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS))

    words, tags = [], []
    for _ in range(n_topics):
        roots = [fresh(syllable) for _ in range(4)]
        topic_words = [
            fresh(
                lambda roots=roots: (
                    str(rng.choice(roots)) + "".join(syllable() for _ in range(rng.integers(1, 3)))
                )
            )
            for _ in range(40)
        ]
        words.append(topic_words)
        tags.append([fresh(lambda: syllable() + syllable()) for _ in range(2)])
    return words, tags


def _texts(
    rng: np.random.Generator, item_topic: np.ndarray, n_topics: int, broken: float
) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Titles (70 % topic words), tags (85 % the topic's), descriptions (55 % topic words)."""
    words, topic_tags = _vocabularies(rng, n_topics)
    vocab = np.array([*(w for ws in words for w in ws), *_FILLER], dtype=object)
    n_topic_words = len(words[0])
    filler_base = n_topics * n_topic_words
    n = len(item_topic)

    def sentences(n_words: np.ndarray, topic_share: float) -> list[str]:
        total = int(n_words.sum())
        owner = np.repeat(np.arange(n), n_words)
        from_topic = rng.random(total) < topic_share
        idx = np.where(
            from_topic,
            item_topic[owner] * n_topic_words + rng.zipf(1.6, total).clip(1, n_topic_words) - 1,
            filler_base + rng.integers(0, len(_FILLER), total),
        )
        flat = vocab[idx]
        cuts = np.cumsum(n_words)[:-1]
        return [" ".join(part) for part in np.split(flat, cuts)]

    titles: list[str | None] = sentences(rng.integers(3, 8, n), 0.7)
    descriptions: list[str | None] = sentences(rng.integers(8, 25, n), 0.55)
    all_tags = np.array([t for ts in topic_tags for t in ts] + list(_GENERIC_TAGS), dtype=object)
    own = item_topic * 2 + (rng.random(n) < 0.3)
    tag_idx = np.where(rng.random(n) < 0.85, own, rng.integers(0, len(all_tags), n))
    tags: list[str | None] = list(all_tags[tag_idx])

    if broken > 0:
        order = rng.permutation(n)
        n_empty = max(2, math.ceil(broken * n / 2))
        for k, i in enumerate(order[:n_empty]):
            titles[i] = None
            if k < max(1, n_empty // 3):  # no text at all
                tags[i] = None
                descriptions[i] = None
        n_html = max(1, round(2 * broken * n))
        for i in order[n_empty : n_empty + n_html]:
            snippet = _HTML_SNIPPETS[int(rng.integers(len(_HTML_SNIPPETS)))]
            descriptions[i] = f"<p>{descriptions[i]} {snippet}</p>"
    return titles, tags, descriptions


def _counts(
    rng: np.random.Generator, item_degree: np.ndarray, broken: float
) -> dict[str, np.ndarray]:
    """Platform counters correlated with popularity; a few cells missing (NaN)."""
    n = len(item_degree)
    views = np.round(
        item_degree * 900.0 * np.exp(rng.normal(0.0, 0.7, n)) + rng.integers(0, 200, n)
    )
    ratios = (0.004, 0.04, 0.003, 0.01, 0.015, 0.006)
    counts = {"view_number": views}
    for name, ratio in zip(COUNT_COLUMNS[1:], ratios, strict=True):
        counts[name] = np.floor(views * ratio * np.exp(rng.normal(0.0, 0.6, n)))
    for name in COUNT_COLUMNS:
        counts[name][rng.random(n) < broken / 2] = np.nan
    return counts


def _write_tables(root: Path, world: _World) -> None:
    pl.DataFrame(
        {
            "item_id": world.item_ids[world.inter_item],
            "user_id": world.user_ids[world.inter_user],
            "timestamp": world.inter_time.astype(np.int64),
        }
    ).write_csv(root / "interactions.csv")
    order = np.argsort(world.item_ids, kind="stable")
    columns: dict[str, pl.Series] = {"item_id": pl.Series(world.item_ids[order])}
    for name in COUNT_COLUMNS:
        columns[name] = pl.Series(world.counts[name][order], nan_to_null=True).cast(pl.Int64)
    for name, values in (
        ("title", world.titles),
        ("tag", world.tags),
        ("description", world.descriptions),
    ):
        columns[name] = pl.Series([values[i] for i in order], dtype=pl.String)
    pl.DataFrame(columns).write_csv(root / "item_info.csv")
    pl.DataFrame(
        {
            "item_id": world.item_ids[order],
            "topic": world.item_topic[order],
            "cover_topic": world.cover_topic[order],
            "misleading": world.item_topic[order] != world.cover_topic[order],
            "cover_defect": pl.Series(world.cover_defect[order]).replace("", None),
        }
    ).write_csv(root / "_topics.csv")


# ----------------------------------------------------------------------------------------
# covers

N_PATTERNS = 8
N_SHAPES = 8


def _topic_styles(rng: np.random.Generator, n_topics: int) -> dict[str, np.ndarray]:
    """Pattern, shape, frequency, angle and palette per topic.

    Topics sharing a pattern never share a shape (the shape shifts by 3 per block of
    ``N_PATTERNS`` topics), and hues are evenly spaced with a stride chosen so that topics
    sharing a pattern or a shape get hues as far apart as possible.
    """
    t = np.arange(n_topics)
    pattern = t % N_PATTERNS
    shape = (pattern + 3 * (t // N_PATTERNS)) % N_SHAPES
    related = (pattern[:, None] == pattern[None, :]) | (shape[:, None] == shape[None, :])
    np.fill_diagonal(related, False)

    def closest_related_hues(stride: int) -> float:
        hue = (stride * t % n_topics) / n_topics
        gap = np.abs(hue[:, None] - hue[None, :])
        gap = np.minimum(gap, 1.0 - gap)
        return float(gap[related].min()) if related.any() else 1.0

    strides = [k for k in range(1, n_topics + 1) if math.gcd(k, n_topics) == 1]
    stride = max(strides, key=closest_related_hues)
    palettes = np.empty((n_topics, 3, 3))
    for k in range(n_topics):
        hue = (stride * k % n_topics) / n_topics
        sat, val = rng.uniform(0.45, 0.75), rng.uniform(0.8, 0.95)
        palettes[k, 0] = colorsys.hsv_to_rgb(hue, sat, val)
        palettes[k, 1] = colorsys.hsv_to_rgb((hue + 0.07) % 1.0, 0.85, rng.uniform(0.3, 0.5))
        palettes[k, 2] = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.9, 0.95)
    return {
        "pattern": pattern,
        "shape": shape,
        "freq": rng.uniform(2.5, 7.0, n_topics),
        "angle": rng.uniform(0.0, np.pi, n_topics),
        "palette": palettes * 255.0,
    }


def _draw_cover(
    styles: dict[str, np.ndarray], topic: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """An RGB uint8 cover: topic pattern in topic colours, 1-3 topic shapes, jitter, noise."""
    g = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(g, g, indexing="ij")
    freq = styles["freq"][topic] * rng.uniform(0.85, 1.15)
    angle = styles["angle"][topic] + rng.normal(0.0, 0.15)
    phase = rng.uniform(0.0, 2 * np.pi)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    pattern = int(styles["pattern"][topic])
    if pattern == 0:  # stripes
        val = 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + phase)
    elif pattern == 1:  # rings
        val = 0.5 + 0.5 * np.sin(2 * np.pi * freq * np.hypot(x - cx, y - cy) + phase)
    elif pattern == 2:  # checkerboard
        val = (np.floor(freq * u + phase) + np.floor(freq * v)) % 2
    elif pattern == 3:  # spokes
        val = 0.5 + 0.5 * np.sin(round(2 * freq) * np.arctan2(y - cy, x - cx) + phase)
    elif pattern == 4:  # dot grid
        du = (freq * u + phase) % 1.0 - 0.5
        dv = (freq * v) % 1.0 - 0.5
        val = (np.hypot(du, dv) < 0.3).astype(float)
    elif pattern == 5:  # waves
        val = 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + 2.5 * np.sin(np.pi * freq * v + phase))
    elif pattern == 6:  # plasma
        dirs = rng.uniform(0.0, 2 * np.pi, 3)
        val = sum(
            np.sin(2 * np.pi * freq * 0.5 * (x * np.cos(d) + y * np.sin(d)) + phase * i)
            for i, d in enumerate(dirs)
        )
        val = 0.5 + val / 6.0
    else:  # banded gradient
        val = np.clip(0.6 * u + 0.4 * ((freq * v + phase) % 1.0), 0.0, 1.0)
    palette = styles["palette"][topic] + rng.normal(0.0, 12.0, (3, 3))
    img = palette[0] + (palette[1] - palette[0]) * val[..., None]

    shape = int(styles["shape"][topic])
    for _ in range(int(rng.integers(1, 4))):
        sx, sy = rng.uniform(0.2, 0.8, 2)
        r = rng.uniform(0.1, 0.25)
        rot = rng.uniform(0.0, 2 * np.pi)
        du = (x - sx) * np.cos(rot) + (y - sy) * np.sin(rot)
        dv = -(x - sx) * np.sin(rot) + (y - sy) * np.cos(rot)
        if shape == 0:  # disc
            mask = np.hypot(du, dv) < r
        elif shape == 1:  # square
            mask = np.maximum(abs(du), abs(dv)) < r * 0.8
        elif shape == 2:  # triangle
            mask = (dv > -r * 0.5) & (abs(du) < (r - dv) * 0.6)
        elif shape == 3:  # ring
            mask = abs(np.hypot(du, dv) - r) < r * 0.25
        elif shape == 4:  # cross
            mask = ((abs(du) < r / 3) & (abs(dv) < r)) | ((abs(dv) < r / 3) & (abs(du) < r))
        elif shape == 5:  # diamond
            mask = abs(du) + abs(dv) < r
        elif shape == 6:  # flat ellipse
            mask = (du / r) ** 2 + (dv / (0.4 * r)) ** 2 < 1
        else:  # star
            mask = np.hypot(du, dv) < r * (0.6 + 0.4 * np.cos(5 * np.arctan2(dv, du)))
        img[mask] = img[mask] * 0.1 + palette[2] * 0.9
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0.0, 8.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(img: np.ndarray, defect: str, png: bool, rng: np.random.Generator) -> bytes | None:
    """File bytes for one cover with its defect applied (None: the file is missing)."""
    if defect == "missing":
        return None
    if defect == "corrupt":
        return rng.bytes(int(rng.integers(200, 2000)))
    pil = Image.fromarray(img, "RGB")
    buf = io.BytesIO()
    if defect == "too_small":
        pil = pil.resize((8, 8))
    elif defect == "grayscale":
        pil = pil.convert("L")
    elif defect == "cmyk":
        pil = pil.convert("CMYK")
    elif defect == "rgba":
        alpha = np.linspace(64, 255, img.shape[1], dtype=np.uint8)[None, :].repeat(img.shape[0], 0)
        pil = Image.fromarray(np.dstack([img, alpha]), "RGBA")
    elif defect == "palette":
        pil = pil.quantize(64)
    elif defect == "16bit":
        gray = np.asarray(pil.convert("L"), dtype=np.uint16) * 257
        pil = Image.fromarray(gray)  # mode I;16
    if png:
        pil.save(buf, format="PNG")
    else:
        pil.save(buf, format="JPEG", quality=88)
    data = buf.getvalue()
    if defect == "truncated":
        data = data[: len(data) // 2]
    return data


@dataclass(frozen=True)
class _CoverJob:
    """One chunk of covers; picklable so a process pool can run it."""

    directory: str
    seed: int
    size: int
    styles: dict[str, np.ndarray]
    indices: np.ndarray
    item_ids: list[str]
    topics: np.ndarray
    defects: list[str]
    png: np.ndarray


def _render_chunk(job: _CoverJob) -> int:
    """Draw, encode and write one chunk of covers; returns how many items it handled."""
    for k, index in enumerate(job.indices):
        rng = np.random.default_rng([job.seed, 11, int(index)])
        img = _draw_cover(job.styles, int(job.topics[k]), job.size, rng)
        data = _encode(img, job.defects[k], bool(job.png[k]), rng)
        if data is not None:
            ext = "png" if job.png[k] else "jpg"
            (Path(job.directory) / f"{job.item_ids[k]}.{ext}").write_bytes(data)
    return len(job.indices)


def _write_covers(directory: Path, world: _World, seed: int, size: int, progress: bool) -> None:
    """Render all covers, in a process pool when there are many.

    Workers are spawned, not forked: the parent may hold polars' and torch's threads,
    which a fork would copy in an unknown state. Spawning re-imports the caller's main
    module, so scripts calling this for a big sample need ``if __name__ == "__main__"``.
    """
    directory.mkdir()
    n = len(world.item_ids)
    jobs = [
        _CoverJob(
            directory=str(directory),
            seed=seed,
            size=size,
            styles=world.styles,
            indices=idx,
            item_ids=[str(s) for s in world.item_ids[idx]],
            topics=world.cover_topic[idx],
            defects=[str(s) for s in world.cover_defect[idx]],
            png=world.cover_png[idx],
        )
        for idx in np.array_split(np.arange(n), max(1, math.ceil(n / COVER_CHUNK)))
    ]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(len(jobs), cpus) if n >= POOL_MIN_COVERS else 1
    with tqdm(total=n, desc="covers", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                bar.update(_render_chunk(job))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for done in pool.map(_render_chunk, jobs):
                    bar.update(done)
