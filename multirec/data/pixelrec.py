"""Read a PixelRec-format directory with polars, validating it as it goes.

Every problem in the raw files becomes either a one-line :class:`DataError` naming the
file, row (1-based line number, header = line 1) or column and the fix, or a documented
repair whose count lands in the prepared dataset's manifest.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from multirec.data.config import ColumnsConfig, FilesConfig
from multirec.errors import DataError

COVER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class RawData:
    """Validated raw tables: ids are strings, timestamps int64."""

    interactions: pl.DataFrame  # user_id, item_id, timestamp
    items: pl.DataFrame  # item_id, title, tag, description, <count columns (float, null = missing)>
    cover_files: dict[str, Path]  # item_id -> cover path for every cover found
    counts: dict[str, int] = field(default_factory=dict)  # repairs, for the manifest


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path} not found ({what}); check data.root and data.files.*")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; expected a CSV with a header row and data")


def _first_non_utf8_line(path: Path) -> int | None:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return None


def _header(path: Path) -> list[str]:
    try:
        return pl.read_csv(path, n_rows=0, infer_schema=False).columns
    except pl.exceptions.NoDataError:
        raise DataError(f"{path} is empty; expected a CSV with a header row and data") from None


def _check_columns(
    path: Path, found: list[str], wanted: dict[str, str], optional: set[str]
) -> None:
    """``wanted`` maps config key -> expected column name."""
    for key, col in wanted.items():
        if col in found or key in optional:
            continue
        close = difflib.get_close_matches(col, found, n=1)
        hint = f" (did you mean {close[0]!r}? set data.columns.{key}={close[0]})" if close else ""
        raise DataError(
            f"{path}: column {col!r} (data.columns.{key}) is missing; found {found}{hint}"
        )


def _scan(path: Path) -> pl.LazyFrame:
    line = _first_non_utf8_line(path)
    if line is not None:
        raise DataError(
            f"{path} line {line} is not UTF-8; re-encode the file as UTF-8 "
            "(e.g. iconv -f GB18030 -t UTF-8)"
        )
    return pl.scan_csv(path, infer_schema=False, quote_char='"')


def read_interactions(
    root: Path, files: FilesConfig, cols: ColumnsConfig
) -> tuple[pl.DataFrame, dict[str, int]]:
    path = root / files.interactions
    _require_file(path, "interactions")
    wanted = {"user_id": cols.user_id, "item_id": cols.item_id, "timestamp": cols.timestamp}
    found = _header(path)
    _check_columns(path, found, wanted, optional=set())
    lf = _scan(path).select(
        pl.col(cols.user_id).str.strip_chars().alias("user_id"),
        pl.col(cols.item_id).str.strip_chars().alias("item_id"),
        pl.col(cols.timestamp).str.strip_chars().alias("ts_raw"),
    )
    df = lf.with_columns(pl.col("ts_raw").cast(pl.Int64, strict=False).alias("timestamp")).collect()
    if df.height == 0:
        raise DataError(f"{path} has a header but no rows; nothing to recommend from")
    bad = df.with_row_index("row").filter(
        pl.col("timestamp").is_null() | pl.col("user_id").is_null() | pl.col("item_id").is_null()
    )
    if bad.height:
        first = bad.row(0, named=True)
        line = first["row"] + 2
        if first["user_id"] is None or first["item_id"] is None:
            raise DataError(f"{path} line {line}: empty user or item id; every row needs both")
        raise DataError(
            f"{path} line {line}: timestamp {first['ts_raw']!r} is not an integer "
            f"({bad.height} such rows); timestamps must be integer seconds"
        )
    counts = {"interactions_read": df.height, "extra_interaction_columns": len(found) - len(wanted)}
    return df.drop("ts_raw"), counts


def read_items(
    root: Path, files: FilesConfig, cols: ColumnsConfig
) -> tuple[pl.DataFrame, dict[str, int]]:
    path = root / files.items
    _require_file(path, "item information")
    found = _header(path)
    wanted = {
        "item_id": cols.item_id,
        "title": cols.title,
        "tag": cols.tag,
        "description": cols.description,
    }
    wanted.update({f"counts[{i}]": c for i, c in enumerate(cols.counts)})
    # Older PixelRec releases lack `description`: treated as empty and counted.
    _check_columns(path, found, wanted, optional={"description"})
    has_desc = cols.description in found
    lf = _scan(path)
    exprs = [
        pl.col(cols.item_id).str.strip_chars().alias("item_id"),
        pl.col(cols.title).fill_null("").alias("title"),
        pl.col(cols.tag).fill_null("").alias("tag"),
        (pl.col(cols.description).fill_null("") if has_desc else pl.lit("")).alias("description"),
    ]
    exprs += [pl.col(c).str.strip_chars().alias(f"raw_{c}") for c in cols.counts]
    df = lf.select(exprs).collect()
    if df.height == 0:
        raise DataError(f"{path} has a header but no rows; every interacted item needs a row")
    missing_id = df.with_row_index("row").filter(
        pl.col("item_id").is_null() | (pl.col("item_id") == "")
    )
    if missing_id.height:
        raise DataError(f"{path} line {missing_id['row'][0] + 2}: empty item id")
    dup = df.filter(pl.col("item_id").is_duplicated())
    if dup.height:
        raise DataError(
            f"{path}: item id {dup['item_id'][0]!r} appears {dup.height} times; item ids must be unique"
        )
    casts = [pl.col(f"raw_{c}").cast(pl.Float64, strict=False).alias(c) for c in cols.counts]
    df = df.with_columns(casts)
    invalid = sum(
        int(
            df.filter(
                pl.col(f"raw_{c}").is_not_null() & (pl.col(f"raw_{c}") != "") & pl.col(c).is_null()
            ).height
        )
        for c in cols.counts
    )
    missing = sum(int(df[c].null_count()) for c in cols.counts) - invalid
    df = df.drop([f"raw_{c}" for c in cols.counts])
    counts = {
        "items_read": df.height,
        "missing_count_values": missing,
        "non_numeric_count_values": invalid,
        "description_column_absent": int(not has_desc),
    }
    return df, counts


def find_covers(root: Path, files: FilesConfig) -> dict[str, Path]:
    """Map item id -> cover file, listing the covers directory once."""
    covers = root / files.covers
    if not covers.is_dir():
        raise DataError(
            f"{covers} not found (covers directory); check data.root and data.files.covers"
        )
    out: dict[str, Path] = {}
    for p in sorted(covers.iterdir()):
        if p.suffix.lower() in COVER_SUFFIXES and p.stem not in out:
            out[p.stem] = p
    return out


def read_pixelrec(root: str | Path, files: FilesConfig, cols: ColumnsConfig) -> RawData:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} not found; set data.root to a PixelRec-format directory")
    inter, c1 = read_interactions(root, files, cols)
    items, c2 = read_items(root, files, cols)
    return RawData(inter, items, find_covers(root, files), {**c1, **c2})
