"""Who interacts with which item, and when.

Users prefer a few topics: about 85 % of their interactions fall in them, the rest is
popularity-driven noise. Pairing keeps both degree sequences exact and makes every
(user, item) pair unique; timestamps then spread each user's interactions over an
activity window inside PixelRec's period.
"""

from __future__ import annotations

import numpy as np

from multirec.data.synthetic.presets import SamplePreset

IN_TOPIC_SHARE = 0.85  # share of a user's interactions drawn from their preferred topics
# A user's expected interactions within one topic stay below this share of the topic's
# items, so heavy users spread over more topics instead of exhausting one.
TOPIC_CAPACITY = 0.5
PERIOD = (1_630_454_400, 1_667_174_400)  # 2021-09-01 .. 2022-10-31 UTC, PixelRec's span


def match(
    rng: np.random.Generator,
    preset: SamplePreset,
    item_topic: np.ndarray,
    item_degree: np.ndarray,
    user_degree: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair user and item "stubs" so both degree sequences hold exactly.

    Each user stub is labelled with one of the user's preferred topics (or as noise); stubs
    of topic t are matched at random with item stubs of topic t, the leftover item stubs
    with the noise stubs -- so noise lands on items in proportion to their popularity.
    Returns (user index, item index) per interaction and each user's weight on each topic
    among their in-topic interactions (``[n_users, n_topics]``, rows summing to 1): the
    taste the interactions are drawn from, which no model sees.
    """
    n_topics = preset.n_topics
    total = int(user_degree.sum())
    topic_mass = np.bincount(item_topic, weights=item_degree, minlength=n_topics)
    topic_items = np.bincount(item_topic, minlength=n_topics)

    pref, n_pref, pref_cum = _preferred_topics(rng, user_degree, topic_mass, topic_items)
    stub_user, stub_topic = _label_user_stubs(rng, user_degree, pref, n_pref, pref_cum, n_topics)
    stub_topic, in_topic = _cap_topics(rng, stub_topic, topic_mass)
    item_stub, stub_item_topic, matched = _item_stubs(rng, item_topic, item_degree, in_topic)

    user_order = np.lexsort((rng.random(total), stub_topic))
    users_sorted = stub_user[user_order]
    n_in = int(in_topic.sum())
    items = np.concatenate([item_stub[matched], rng.permutation(item_stub[~matched])])
    group = np.concatenate([stub_item_topic[matched], np.full(total - n_in, n_topics)])
    items = _remove_duplicates(rng, users_sorted, items, group, preset.n_items)
    return users_sorted, items, _topic_weights(pref, pref_cum, n_topics)


def _topic_weights(pref: np.ndarray, pref_cum: np.ndarray, n_topics: int) -> np.ndarray:
    """``[n_users, n_topics]``: the weight ``pref_cum`` gives each of a user's topics."""
    weights = np.zeros((len(pref), n_topics))
    step = np.diff(pref_cum, axis=1, prepend=0.0)
    np.add.at(weights, (np.arange(len(pref))[:, None], pref), step)
    return weights


def _preferred_topics(
    rng: np.random.Generator,
    user_degree: np.ndarray,
    topic_mass: np.ndarray,
    topic_items: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's preferred topics, how many of them count, and cumulative topic weights.

    1-3 topics, more for heavy users so no topic is asked for more items than it holds;
    drawn in proportion to topic mass (Gumbel top-k). Rows of ``pref`` are padded to the
    largest count; ``pref_cum`` reaches 1 at the user's last real topic.
    """
    n_users, n_topics = len(user_degree), len(topic_mass)
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
    return pref, n_pref, pref_cum


def _label_user_stubs(
    rng: np.random.Generator,
    user_degree: np.ndarray,
    pref: np.ndarray,
    n_pref: np.ndarray,
    pref_cum: np.ndarray,
    n_topics: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One stub per interaction: its user, and one of that user's preferred topics or noise.

    Noise is the label ``n_topics``, one past the last topic.
    """
    total = int(user_degree.sum())
    stub_user = np.repeat(np.arange(len(user_degree)), user_degree)
    pick = (rng.random(total)[:, None] > pref_cum[stub_user]).sum(axis=1)
    pick = np.minimum(pick, n_pref[stub_user] - 1)  # guards the cumsum's rounding at 1.0
    stub_topic = np.where(rng.random(total) < IN_TOPIC_SHARE, pref[stub_user, pick], n_topics)
    return stub_user, stub_topic


def _cap_topics(
    rng: np.random.Generator, stub_topic: np.ndarray, topic_mass: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Relabel as noise the stubs a topic cannot take; also return the stubs kept per topic.

    A topic asked for more stubs than its items hold gives a random excess to noise.
    """
    n_topics, total = len(topic_mass), len(stub_topic)
    order = np.lexsort((rng.random(total), stub_topic))
    sorted_topic = stub_topic[order]
    asked = np.bincount(sorted_topic, minlength=n_topics + 1)
    pos = np.arange(total) - np.repeat(np.cumsum(asked) - asked, asked)
    capacity = np.append(topic_mass.astype(np.int64), total)
    over = pos >= capacity[sorted_topic]
    capped = stub_topic.copy()
    capped[order[over]] = n_topics
    in_topic = np.bincount(capped, minlength=n_topics + 1)[:n_topics]
    return capped, in_topic


def _item_stubs(
    rng: np.random.Generator, item_topic: np.ndarray, item_degree: np.ndarray, in_topic: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item stubs grouped by topic in random order, their topics, and which are matched.

    The first ``in_topic[t]`` stubs of topic t are matched with users' topic-t stubs; the
    rest go to the noise pool.
    """
    n_topics, total = len(in_topic), int(item_degree.sum())
    item_stub = np.repeat(np.arange(len(item_degree)), item_degree)
    item_stub = item_stub[np.lexsort((rng.random(total), item_topic[item_stub]))]
    stub_item_topic = item_topic[item_stub]
    per_topic = np.bincount(stub_item_topic, minlength=n_topics)
    ipos = np.arange(total) - np.repeat(np.cumsum(per_topic) - per_topic, per_topic)
    matched = ipos < in_topic[stub_item_topic]
    return item_stub, stub_item_topic, matched


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


def timestamps(
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
