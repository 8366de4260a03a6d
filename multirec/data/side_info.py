"""Tag ids and numerical item features, fitted on training interactions only.

Fitting the tag vocabulary or the count statistics on all interactions would leak
held-out data into the features; both are fitted on the training split.
"""

from __future__ import annotations

import warnings

import numpy as np

RARE_TAG = 0  # shared id for rare, empty and unseen-in-training tags


def encode_tags(
    item_tags: list[str], train_items: np.ndarray, min_count: int
) -> tuple[np.ndarray, list[str]]:
    """Tag id per item (0 = rare/unknown) and the vocabulary (index = id).

    A tag's frequency is the number of training interactions with items carrying it.
    Ids are ordered by frequency, then name, so they are deterministic.
    """
    names, codes = np.unique(np.asarray(item_tags, dtype=object).astype(str), return_inverse=True)
    freq = np.bincount(codes[train_items], minlength=len(names))
    keep = (freq >= min_count) & (names != "")
    kept = np.flatnonzero(keep)
    kept = kept[np.lexsort((names[kept], -freq[kept]))]
    mapping = np.zeros(len(names), dtype=np.int32)
    mapping[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return mapping[codes], ["<rare>", *names[kept].tolist()]


def standardise_counts(counts: np.ndarray, train_items: np.ndarray) -> tuple[np.ndarray, dict]:
    """log1p + z-score each count column with training statistics; missing -> mean (0).

    Values that are not a count (nan, inf, negative) are missing too: a single inf would
    otherwise make the column's mean infinite and every item's feature undefined.
    Returns the features and the statistics (saved in the manifest for reuse).
    """
    if counts.shape[1] == 0:  # data without count columns (data.columns.counts=[])
        return np.zeros(counts.shape, dtype=np.float32), {"mean": [], "std": []}
    counts = counts.astype(np.float64)
    x = np.log1p(np.where(np.isfinite(counts) & (counts >= 0), counts, np.nan))
    train = x[train_items]
    with warnings.catch_warnings():  # a column with no value in training: nan, made 0 / 1 below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(train, axis=0) if len(train) else np.zeros(x.shape[1])
        std = np.nanstd(train, axis=0) if len(train) else np.ones(x.shape[1])
    mean = np.nan_to_num(mean)
    std = np.where(np.nan_to_num(std) > 1e-8, np.nan_to_num(std), 1.0)
    z = (x - mean) / std
    z = np.where(np.isnan(z), 0.0, z)
    return z.astype(np.float32), {"mean": mean.tolist(), "std": std.tolist()}
