"""Turn a raw dataset directory into a prepared dataset (see dataset.py).

The raw format is the business of the reader ``data.reader`` names (readers.py); from
its :class:`RawData` on, preparation is the same for every format. The prepared
directory is named after a fingerprint of the inputs and every setting, so preparing
again with the same inputs and settings is a no-op, and a change of either produces a
new directory instead of silently replacing the old one. The output is deterministic:
the same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import multirec
from multirec.data import covers as cov
from multirec.data.config import DataConfig
from multirec.data.dataset import MANIFEST, PreparedDataset
from multirec.data.kcore import kcore_mask
from multirec.data.readers import RawData, Reader, build_reader
from multirec.data.side_info import encode_tags, standardise_counts
from multirec.data.splits import DROPPED, TEST, TRAIN, VALID, split_labels
from multirec.data.text import check_template, clean_text, render_text
from multirec.errors import ConfigError, DataError
from multirec.io import (
    atomic_dir,
    atomic_write_json,
    exclusive_lock,
    file_digest,
    fingerprint,
    os_errors,
    sibling_lock,
    sigterm_unwinds,
)

log = logging.getLogger(__name__)
PREP_VERSION = 2  # bump when the preparation logic changes what it writes
READ_HINT = "make the raw data readable by this user or set data.root"
WRITE_HINT = "choose a writable paths.prepared_dir"
LOCK_TIMEOUT_S = 2 * 3600  # longest wait for another process preparing the same dataset
SPLITS = (("train", TRAIN), ("valid", VALID), ("test", TEST))


def _listing(folder: Path) -> list[tuple[str, int, int]]:
    listing = []
    for p in sorted(folder.iterdir()):
        try:
            st = p.stat()
        except OSError:  # a dangling symlink: for a reader, a missing file
            st = p.lstat()
        listing.append((p.name, st.st_size, st.st_mtime_ns))
    return listing


def input_digest(reader: Reader, root: Path) -> dict[str, str | None]:
    """Identify the raw inputs cheaply: full digests of files, listings of folders.

    A missing input has no digest; the reader names it when it reads.
    """
    digests: dict[str, str | None] = {}
    for name, path in reader.inputs(root).items():
        if path.is_dir():
            digests[name] = fingerprint(_listing(path))
        else:
            digests[name] = file_digest(path) if path.is_file() else None
    digests["root"] = str(root.resolve())
    return digests


def dataset_fingerprint(cfg: DataConfig, reader: Reader) -> tuple[str, dict]:
    settings = asdict(cfg)
    inputs = input_digest(reader, Path(cfg.root))
    return fingerprint(
        {"settings": settings, "inputs": inputs, "prep_version": PREP_VERSION}
    ), inputs


def validate_settings(cfg: DataConfig) -> None:
    if cfg.covers.policy not in ("drop", "keep"):
        raise ConfigError(f"data.covers.policy={cfg.covers.policy!r} is unknown; valid: drop, keep")
    if cfg.duplicates not in ("drop", "error"):
        raise ConfigError(f"data.duplicates={cfg.duplicates!r} is unknown; valid: drop, error")
    if cfg.kcore < 1:
        raise ConfigError(f"data.kcore={cfg.kcore} must be >= 1")
    check_template(cfg.text.template)


def clean_interactions(raw: RawData, cfg: DataConfig, counts: Counter) -> pl.DataFrame:
    inter = raw.interactions
    known = inter.join(raw.items.select("item_id"), on="item_id", how="semi")
    counts["interactions_unknown_item"] = inter.height - known.height
    if counts["interactions_unknown_item"] and known.height == 0:
        raise DataError(
            f"{raw.sources.interactions}: no interaction names an item of "
            f"{raw.sources.items.name}; check that both files come from the same dataset"
        )
    dup = known.filter(pl.struct("user_id", "item_id").is_duplicated())
    if dup.height and cfg.duplicates == "error":
        first = dup.row(0, named=True)
        raise DataError(
            f"{raw.sources.interactions}: user {first['user_id']!r} and item "
            f"{first['item_id']!r} appear together more than once; set data.duplicates=drop to keep the first"
        )
    deduped = known.sort(["user_id", "timestamp", "item_id"]).unique(
        subset=["user_id", "item_id"], keep="first", maintain_order=True
    )
    counts["duplicate_interactions"] = known.height - deduped.height
    return deduped


def _item_table(
    raw: RawData, cfg: DataConfig, item_ids: pl.Series, counts: Counter, progress: bool
) -> pl.DataFrame:
    items = raw.items.join(pl.DataFrame({"item_id": item_ids}), on="item_id", how="semi").sort(
        "item_id"
    )
    paths = [str(raw.cover_files[i]) if i in raw.cover_files else None for i in items["item_id"]]
    status, cover_counts = cov.check_covers(
        paths, cfg.covers.min_side, cfg.covers.max_pixels, cfg.covers.workers, progress
    )
    counts.update(cover_counts)
    titles = [clean_text(t) for t in items["title"]]
    tags = [clean_text(t) for t in items["tag"]]
    descs = [clean_text(t) for t in items["description"]]
    texts = [
        render_text(cfg.text.template, a, b, c) for a, b, c in zip(titles, tags, descs, strict=True)
    ]
    counts["empty_title"] = sum(1 for t in titles if not t)
    counts["empty_text"] = sum(1 for t in texts if not t)
    ok = np.array([s == cov.OK for s in status])
    return items.with_columns(
        pl.Series("title", titles),
        pl.Series("tag", tags),
        pl.Series("text", texts),
        pl.Series(
            "cover_path",
            [p if o else None for p, o in zip(paths, ok, strict=True)],
            dtype=pl.String,
        ),
        pl.Series("cover_ok", ok),
    ).drop("description")


def cover_counts(counts: Counter) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k.startswith("cover_") and v}


def prepare(cfg: DataConfig, prepared_dir: str | Path, progress: bool = True) -> PreparedDataset:
    """Prepare ``cfg``'s raw data under ``prepared_dir``; reuse an identical earlier result.

    Processes preparing the same dataset at once (parallel sweep jobs on new data) take
    turns through a lock: the first prepares, the others wait and reuse its result.
    SIGTERM unwinds like Ctrl-C while this runs, so a stopped preparation leaves neither
    a temporary folder nor cover-validation workers behind.
    """
    validate_settings(cfg)
    reader = build_reader(cfg.reader)
    with sigterm_unwinds():
        with os_errors("read", READ_HINT):
            fp, inputs = dataset_fingerprint(cfg, reader)
        target = Path(prepared_dir) / f"{cfg.name}-{fp[:12]}"
        earlier = _prepared(target, fp)
        if earlier is not None:
            return earlier
        with os_errors("write", WRITE_HINT):
            target.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(sibling_lock(target), LOCK_TIMEOUT_S, f"preparing {target}"):
            return _prepared(target, fp) or _prepare(cfg, reader, target, fp, inputs, progress)


def _prepared(target: Path, fp: str) -> PreparedDataset | None:
    """The finished dataset at ``target`` when it is the one of fingerprint ``fp``."""
    with os_errors("read", WRITE_HINT):
        earlier = PreparedDataset.load(target) if (target / MANIFEST).is_file() else None
    if earlier is None or earlier.fingerprint != fp:
        return None
    log.info("prepared dataset up to date: %s", target)
    return earlier


def _prepare(
    cfg: DataConfig, reader: Reader, target: Path, fp: str, inputs: dict, progress: bool
) -> PreparedDataset:
    with os_errors("read", READ_HINT):
        raw = reader.read(Path(cfg.root))
    counts: Counter = Counter(raw.counts)
    inter = clean_interactions(raw, cfg, counts)
    items = _item_table(raw, cfg, inter["item_id"].unique(), counts, progress)
    counts["items_without_interactions"] = raw.items.height - items.height
    if cfg.covers.policy == "drop":
        inter = _drop_invalid_covers(cfg, raw, inter, items, counts)
    inter = _kcore(cfg, inter, counts)
    users, items, inter = _index(inter, items)
    inter = _split(cfg, inter, counts)
    train_items = inter.filter(pl.col("split") == TRAIN)["item_idx"].to_numpy().astype(np.int64)
    items, vocab, stats = _item_features(cfg, raw, items, train_items, counts)
    manifest = {
        "fingerprint": fp,
        "name": cfg.name,
        "multirec_version": multirec.__version__,
        "prep_version": PREP_VERSION,
        "settings": asdict(cfg),
        "inputs": inputs,
        "n_users": users.height,
        "n_items": items.height,
        "n_tags": len(vocab),
        "tag_vocab": vocab,
        "numeric_columns": list(raw.count_columns),
        "numeric_stats": stats,
        "split_sizes": {
            name: inter.filter(pl.col("split") == code).height for name, code in SPLITS
        },
        "counts": dict(sorted(counts.items())),
    }
    _write(target, users, items, inter, manifest)
    log.info("prepared dataset written: %s", target)
    return PreparedDataset.load(target)


def _drop_invalid_covers(
    cfg: DataConfig, raw: RawData, inter: pl.DataFrame, items: pl.DataFrame, counts: Counter
) -> pl.DataFrame:
    """``inter`` without the items whose cover is missing or unusable (the paper's policy)."""
    bad = items.filter(~pl.col("cover_ok"))
    counts["items_dropped_invalid_cover"] = bad.height
    kept = inter.join(bad.select("item_id"), on="item_id", how="anti")
    counts["interactions_dropped_invalid_cover"] = inter.height - kept.height
    if kept.height == 0:
        raise DataError(
            f"no item of {cfg.root} has a usable cover in {raw.sources.covers} "
            f"({cover_counts(counts)}); check the covers or set data.covers.policy=keep"
        )
    return kept


def _kcore(cfg: DataConfig, inter: pl.DataFrame, counts: Counter) -> pl.DataFrame:
    """The iterated k-core of ``inter``, computed on integer codes."""
    ucodes = inter["user_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    icodes = inter["item_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    keep, rounds = kcore_mask(ucodes, icodes, cfg.kcore)
    counts["kcore_rounds"] = rounds
    counts["interactions_removed_by_kcore"] = int((~keep).sum())
    inter = inter.filter(pl.Series(keep))
    if inter.height == 0:
        raise DataError(
            f"the {cfg.kcore}-core filter removed every interaction of {cfg.root}; "
            "lower data.kcore or use more data"
        )
    return inter


def _index(
    inter: pl.DataFrame, items: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Users, items and interactions with dense indices in id order, the models' rows."""
    users = pl.DataFrame({"user_id": inter["user_id"].unique().sort()}).with_row_index("user_idx")
    items = items.join(inter.select("item_id").unique(), on="item_id", how="semi").sort("item_id")
    items = items.with_row_index("item_idx")
    inter = (
        inter.join(users, on="user_id")
        .join(items.select("item_id", "item_idx"), on="item_id")
        .select(pl.col("user_idx").cast(pl.Int32), pl.col("item_idx").cast(pl.Int32), "timestamp")
        .sort(["user_idx", "timestamp", "item_idx"])
    )
    return users, items, inter


def _split(cfg: DataConfig, inter: pl.DataFrame, counts: Counter) -> pl.DataFrame:
    """``inter`` with each interaction's split label."""
    u = inter["user_idx"].to_numpy().astype(np.int64)
    labels = split_labels(
        u,
        inter["timestamp"].to_numpy(),
        cfg.split.strategy,
        list(cfg.split.ratios),
        cfg.split.seed,
        items=inter["item_idx"].to_numpy(),
    )
    counts["heldout_dropped_no_train_history"] = int((labels == DROPPED).sum())
    return inter.with_columns(pl.Series("split", labels))


def _item_features(
    cfg: DataConfig, raw: RawData, items: pl.DataFrame, train_items: np.ndarray, counts: Counter
) -> tuple[pl.DataFrame, list[str], dict[str, Any]]:
    """The item table as written, with tag ids and standardised counts fitted on training
    interactions only; also the tag vocabulary and the count statistics."""
    tag_idx, vocab = encode_tags(items["tag"].to_list(), train_items, cfg.tags.min_count)
    numeric, stats = standardise_counts(items.select(raw.count_columns).to_numpy(), train_items)
    counts["items_cold_in_train"] = int(items.height - np.unique(train_items).size)
    items = items.select(
        pl.col("item_idx").cast(pl.Int32),
        "item_id",
        "title",
        "text",
        "tag",
        pl.Series("tag_idx", tag_idx, dtype=pl.Int32),
        "cover_path",
        "cover_ok",
        *[pl.Series(f"num_{c}", numeric[:, j]) for j, c in enumerate(raw.count_columns)],
    )
    return items, vocab, stats


def _write(
    target: Path,
    users: pl.DataFrame,
    items: pl.DataFrame,
    inter: pl.DataFrame,
    manifest: dict[str, Any],
) -> None:
    """The prepared files, appearing at ``target`` all at once; the manifest goes last."""
    with os_errors("write", WRITE_HINT), atomic_dir(target) as tmp:
        users.select(pl.col("user_idx").cast(pl.Int32), "user_id").write_parquet(
            tmp / "users.parquet"
        )
        items.write_parquet(tmp / "items.parquet")
        for name, code in SPLITS:
            inter.filter(pl.col("split") == code).drop("split").write_parquet(
                tmp / f"{name}.parquet"
            )
        atomic_write_json(tmp / MANIFEST, manifest)
