"""How many interactions each user and each item gets, and which topic each item has.

Degree sequences are drawn before any interaction exists, so totals, means and maxima
match the preset exactly (the ``pixelrec50k`` preset reproduces the paper's Table 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import ndtri

from multirec.data.synthetic.presets import SamplePreset

MIN_USER_INTERACTIONS = 5


def item_topics(
    rng: np.random.Generator, n_items: int, n_topics: int
) -> tuple[np.ndarray, np.ndarray]:
    """Topic of every item (topics of mildly different sizes) and its rank within the topic."""
    sizes = 1 + integer_split(rng.dirichlet(np.full(n_topics, 10.0)), n_items - n_topics)
    topic = rng.permutation(np.repeat(np.arange(n_topics), sizes))
    order = np.argsort(topic, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(n_items, dtype=np.int64)
    rank[order] = np.arange(n_items) - np.repeat(starts, sizes)
    return topic, rank


def integer_split(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` summing exactly to ``total`` (largest remainder)."""
    raw = weights / weights.sum() * total
    out = np.floor(raw).astype(np.int64)
    short = total - int(out.sum())
    if short:
        out[np.argsort(-(raw - out), kind="stable")[:short]] += 1
    return out


def user_degrees(rng: np.random.Generator, preset: SamplePreset) -> np.ndarray:
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


def item_degrees(
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
    deg = minimum + integer_split(weights_for(0.5 * (lo + hi)), rest)
    _pin_maximum(rng, deg, minimum, maximum)
    return deg


def _pin_maximum(rng: np.random.Generator, deg: np.ndarray, minimum: int, maximum: int) -> None:
    """Set the largest degree to ``maximum`` in place, keeping the sum.

    Rounding leaves the top degree a few units off; the difference moves onto other
    entries with slack, one unit each.
    """
    top = int(np.argmax(deg))
    diff = maximum - int(deg[top])
    if not diff:
        return
    deg[top] = maximum
    sign = 1 if diff > 0 else -1
    slack = (
        np.flatnonzero((deg > minimum) & (deg < maximum - 1))
        if sign > 0
        else np.flatnonzero(deg < maximum - 1)
    )
    deg[rng.choice(slack, abs(diff), replace=False)] -= sign
