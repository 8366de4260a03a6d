"""The PixelRec reader: a directory of two CSVs and a covers folder, read with polars.

Every problem in the raw files becomes either a one-line :class:`DataError` naming the
file, row (1-based line number, header = line 1) or column and the fix, or a documented
repair whose count lands in the prepared dataset's manifest.
"""

from __future__ import annotations

import csv
import difflib
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from omegaconf import DictConfig

from multirec.config import to_schema
from multirec.data.readers import RawData, Reader, Sources
from multirec.errors import ConfigError, DataError

COVER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
TIMESTAMP_UNITS = ("auto", "s", "ms")
# A timestamp at least this large is taken as milliseconds: as seconds it would be after
# the year 5000, as milliseconds it is after March 1973.
MS_THRESHOLD = 10**11
# Byte-order marks of encodings that are not UTF-8 (longest first: UTF-32LE starts like UTF-16LE).
BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
POLARS_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException)
COUNT_COLUMNS = [
    "view_number",
    "comment_number",
    "thumbup_number",
    "share_number",
    "coin_number",
    "favorite_number",
    "barrage_number",
]


@dataclass
class PixelRecFiles:
    """File and folder names under ``data.root`` (``data.reader.files``)."""

    interactions: str = "interactions.csv"
    items: str = "item_info.csv"
    covers: str = "covers"


@dataclass
class PixelRecColumns:
    """Column names in the two CSVs (``data.reader.columns``)."""

    item_id: str = "item_id"
    user_id: str = "user_id"
    timestamp: str = "timestamp"
    title: str = "title"
    tag: str = "tag"
    description: str = "description"
    counts: list[str] = field(default_factory=lambda: list(COUNT_COLUMNS))


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path} not found ({what}); check data.root and data.reader.files.*")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; expected a CSV with a header row and data")


def _check_encoding(path: Path) -> None:
    """Refuse text that is not UTF-8 before polars misreads it (UTF-16 parses as
    columns with NUL bytes in their names, so it would be reported as missing columns)."""
    with open(path, "rb") as f:
        head = f.read(4)
        for bom, name in BOMS:
            if head.startswith(bom):
                raise DataError(
                    f"{path} is {name}; re-save it as UTF-8 (e.g. iconv -f {name} -t UTF-8)"
                )
        f.seek(0)
        for lineno, raw in enumerate(f, start=1):
            if b"\0" in raw:
                raise DataError(
                    f"{path} line {lineno} holds a NUL byte: the file is binary or UTF-16/32 "
                    "without a byte-order mark; re-save it as UTF-8 text"
                )
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{path} line {lineno} is not UTF-8; re-encode the file as UTF-8 "
                    "(e.g. iconv -f GB18030 -t UTF-8)"
                ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _header(path: Path) -> list[str]:
    try:
        return pl.read_csv(path, n_rows=0, infer_schema=False, glob=False).columns
    except pl.exceptions.NoDataError:
        raise DataError(f"{path} is empty; expected a CSV with a header row and data") from None
    except POLARS_ERRORS as exc:
        raise DataError(f"{path}: the header row is not valid CSV ({_first_line(exc)})") from None


def _malformed(path: Path, exc: BaseException) -> DataError:
    """Say where ``path`` breaks the CSV rules; polars's own message names no line.

    Only runs after polars has failed, so reading the file again in Python costs nothing
    on good data.
    """
    limit = csv.field_size_limit(sys.maxsize)  # the true fault, not the csv module's limit
    try:
        with open(path, encoding="utf-8", newline="") as f:
            record: list[str] = []  # the physical lines of the record being parsed

            def lines() -> Iterator[str]:
                for text in f:
                    record.append(text)
                    yield text

            rows = csv.reader(lines(), strict=True)
            width, line = None, 1
            try:
                for row in rows:
                    if width is None:
                        width = len(row)
                    elif len(row) > width:
                        return DataError(
                            f"{path} line {line} has {len(row)} fields but the header has {width}; "
                            'put fields that contain commas in double quotes ("a, b")'
                        )
                    # An odd number of quotes means one stands inside an unquoted field,
                    # which polars (unlike the csv module) reads as opening a quoted one.
                    if "".join(record).count('"') % 2:
                        return DataError(
                            f'{path} line {line}: a " inside a field that is not in double '
                            'quotes; put the field in double quotes and double the " in it'
                        )
                    record.clear()
                    line = rows.line_num + 1
            except csv.Error as err:
                return DataError(f"{path} line {line} is not valid CSV ({err}); check its quoting")
    finally:
        csv.field_size_limit(limit)
    return DataError(f"{path} is not valid CSV ({_first_line(exc)}); check its quoting")


def _collect(lf: pl.LazyFrame, path: Path) -> pl.DataFrame:
    try:
        return lf.collect()
    except POLARS_ERRORS as exc:
        raise _malformed(path, exc) from None


def _check_columns(
    path: Path, found: list[str], wanted: dict[str, str], optional: set[str]
) -> None:
    """``wanted`` maps config key -> expected column name."""
    for key, col in wanted.items():
        if col in found or key in optional:
            continue
        close = difflib.get_close_matches(col, found, n=1)
        if not close:
            hint = ""
        elif close[0].isprintable():
            hint = f" (did you mean {close[0]!r}? set data.reader.columns.{key}={close[0]})"
        else:
            hint = f" (did you mean {close[0]!r}? its name holds control characters; fix the header row)"
        raise DataError(
            f"{path}: column {col!r} (data.reader.columns.{key}) is missing; found {found}{hint}"
        )


def _scan(path: Path) -> pl.LazyFrame:
    # glob=False: a folder named like "x-[0.3,0.35]" is a path, not a pattern
    return pl.scan_csv(path, infer_schema=False, quote_char='"', glob=False)


def _unify_timestamp_units(df: pl.DataFrame, path: Path, unit: str) -> tuple[pl.DataFrame, int]:
    """Timestamps in one unit, and how many were converted.

    Seconds and milliseconds mixed in one file would put every millisecond row after
    every second row in time, silently corrupting time-ordered splits. ``auto`` keeps a
    file in either unit as it is and refuses a mix; ``s`` / ``ms`` convert the rows in
    the other unit.
    """
    is_ms = pl.col("timestamp") >= MS_THRESHOLD
    n_ms = int(df.select(is_ms.sum()).item())
    n_s = df.height - n_ms
    if unit == "s":
        return df.with_columns(
            pl.when(is_ms)
            .then(pl.col("timestamp") // 1000)
            .otherwise(pl.col("timestamp"))
            .alias("timestamp")
        ), n_ms
    if unit == "ms":
        return df.with_columns(
            pl.when(is_ms)
            .then(pl.col("timestamp"))
            .otherwise(pl.col("timestamp") * 1000)
            .alias("timestamp")
        ), n_s
    if n_ms and n_s:
        rows = df.with_row_index("row")
        s_row = rows.filter(~is_ms).row(0, named=True)
        ms_row = rows.filter(is_ms).row(0, named=True)
        raise DataError(
            f"{path} mixes timestamp units: line {s_row['row'] + 2} has {s_row['timestamp']} "
            f"(seconds), line {ms_row['row'] + 2} has {ms_row['timestamp']} (milliseconds); "
            "set data.reader.timestamp_unit=s (or ms) to convert them all to one unit"
        )
    return df, 0


def read_interactions(
    root: Path, files: PixelRecFiles, cols: PixelRecColumns, timestamp_unit: str = "auto"
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The interactions, with timestamps in one unit (see :func:`_unify_timestamp_units`)."""
    path = root / files.interactions
    _require_file(path, "interactions")
    _check_encoding(path)
    wanted = {"user_id": cols.user_id, "item_id": cols.item_id, "timestamp": cols.timestamp}
    found = _header(path)
    _check_columns(path, found, wanted, optional=set())
    lf = _scan(path).select(
        pl.col(cols.user_id).str.strip_chars().alias("user_id"),
        pl.col(cols.item_id).str.strip_chars().alias("item_id"),
        pl.col(cols.timestamp).str.strip_chars().alias("ts_raw"),
    )
    df = _collect(
        lf.with_columns(pl.col("ts_raw").cast(pl.Int64, strict=False).alias("timestamp")), path
    )
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
        if first["ts_raw"] is None:
            raise DataError(f"{path} line {line}: empty timestamp; every row needs one")
        raise DataError(
            f"{path} line {line}: timestamp {first['ts_raw']!r} is not an integer "
            f"({bad.height} such rows); timestamps must be integer seconds or milliseconds"
        )
    df, converted = _unify_timestamp_units(df.drop("ts_raw"), path, timestamp_unit)
    counts = {
        "interactions_read": df.height,
        "extra_interaction_columns": len(found) - len(wanted),
        "timestamps_converted": converted,
    }
    return df, counts


def read_items(
    root: Path, files: PixelRecFiles, cols: PixelRecColumns
) -> tuple[pl.DataFrame, dict[str, int]]:
    path = root / files.items
    _require_file(path, "item information")
    _check_encoding(path)
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
    df = _collect(lf.select(exprs), path)
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

    def total(cond: Callable[[str], pl.Expr]) -> int:
        return sum(int(df.select(cond(c).sum()).item()) for c in cols.counts)

    invalid = total(
        lambda c: (
            pl.col(f"raw_{c}").is_not_null() & (pl.col(f"raw_{c}") != "") & pl.col(c).is_null()
        )
    )
    missing = sum(int(df[c].null_count()) for c in cols.counts) - invalid
    # inf, nan and negative counts would become infinite or undefined features for every
    # item once standardised: they are treated as missing, and counted.
    non_finite = total(lambda c: pl.col(c).is_not_null() & ~pl.col(c).is_finite())
    negative = total(lambda c: pl.col(c).is_finite() & (pl.col(c) < 0))
    df = df.with_columns(
        pl.when(pl.col(c).is_finite() & (pl.col(c) >= 0)).then(pl.col(c)).alias(c)
        for c in cols.counts
    ).drop([f"raw_{c}" for c in cols.counts])
    counts = {
        "items_read": df.height,
        "missing_count_values": missing,
        "non_numeric_count_values": invalid,
        "non_finite_count_values": non_finite,
        "negative_count_values": negative,
        "description_column_absent": int(not has_desc),
    }
    return df, counts


def find_covers(root: Path, files: PixelRecFiles) -> dict[str, Path]:
    """Map item id -> cover file, listing the covers directory once."""
    covers = root / files.covers
    if not covers.is_dir():
        raise DataError(
            f"{covers} not found (covers directory); check data.root and data.reader.files.covers"
        )
    out: dict[str, Path] = {}
    for p in sorted(covers.iterdir()):
        if p.suffix.lower() in COVER_SUFFIXES and p.stem not in out:
            out[p.stem] = p
    return out


def pixelrec_node() -> dict[str, Any]:
    """The ``data.reader`` node of PixelRec with every setting at its default, spelled out
    as ``conf/data/pixelrec.yaml`` does so that both give a dataset one fingerprint."""
    return {
        "_target_": f"{__name__}.PixelRecReader",
        "files": asdict(PixelRecFiles()),
        "columns": asdict(PixelRecColumns()),
        "timestamp_unit": "auto",
    }


class PixelRecReader(Reader):
    """PixelRec's layout: interactions and item information as CSVs, covers named by item id.

    ``files`` and ``columns`` rename what a copy of PixelRec (or data laid out like it)
    calls its files and columns; ``timestamp_unit`` is ``auto`` (one unit per file, a mix
    refused) or ``s`` / ``ms`` (every timestamp converted to it, conversions counted).
    """

    def __init__(
        self,
        files: DictConfig | dict[str, Any] | None = None,
        columns: DictConfig | dict[str, Any] | None = None,
        timestamp_unit: str = "auto",
    ) -> None:
        self.files = to_schema(files or {}, PixelRecFiles, "data.reader.files")
        self.columns = to_schema(columns or {}, PixelRecColumns, "data.reader.columns")
        if timestamp_unit not in TIMESTAMP_UNITS:
            raise ConfigError(
                f"data.reader.timestamp_unit={timestamp_unit!r} is unknown; "
                f"valid: {', '.join(TIMESTAMP_UNITS)}"
            )
        self.timestamp_unit = timestamp_unit

    def inputs(self, root: Path) -> dict[str, Path]:
        return {
            "interactions": root / self.files.interactions,
            "items": root / self.files.items,
            "covers": root / self.files.covers,
        }

    def sources(self, root: Path) -> Sources:
        return Sources(**self.inputs(root))

    def read(self, root: Path) -> RawData:
        if not root.is_dir():
            raise DataError(f"{root} not found; set data.root to a PixelRec-format directory")
        inter, c1 = read_interactions(root, self.files, self.columns, self.timestamp_unit)
        items, c2 = read_items(root, self.files, self.columns)
        return RawData(
            inter,
            items,
            find_covers(root, self.files),
            list(self.columns.counts),
            self.sources(root),
            {**c1, **c2},
        )
