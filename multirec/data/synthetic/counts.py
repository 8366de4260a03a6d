"""Platform counters (views, comments, likes, ...) for ``item_info.csv``."""

from __future__ import annotations

import numpy as np

from multirec.data.pixelrec import COUNT_COLUMNS

# Expected count per view of every counter after ``view_number``, in COUNT_COLUMNS order.
_PER_VIEW = (0.004, 0.04, 0.003, 0.01, 0.015, 0.006)


def item_counts(
    rng: np.random.Generator, item_degree: np.ndarray, broken: float
) -> dict[str, np.ndarray]:
    """Counters correlated with popularity; a ``broken / 2`` share of cells missing (NaN)."""
    n = len(item_degree)
    views = np.round(
        item_degree * 900.0 * np.exp(rng.normal(0.0, 0.7, n)) + rng.integers(0, 200, n)
    )
    counts = {"view_number": views}
    for name, ratio in zip(COUNT_COLUMNS[1:], _PER_VIEW, strict=True):
        counts[name] = np.floor(views * ratio * np.exp(rng.normal(0.0, 0.6, n)))
    for name in COUNT_COLUMNS:
        counts[name][rng.random(n) < broken / 2] = np.nan
    return counts
