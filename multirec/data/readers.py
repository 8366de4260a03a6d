"""The raw tables every dataset format is read into, and the reader interface.

Preparation (``prepare.py``) works on :class:`RawData` alone, so a new raw format is one
:class:`Reader` subclass plus a config node naming it (``data.reader``, a ``_target_``
node); nothing in preparation changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from multirec.errors import ConfigError, MultirecError

INTERACTION_COLUMNS = {"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64}
ITEM_TEXT_COLUMNS = {
    "item_id": pl.String,
    "title": pl.String,
    "tag": pl.String,
    "description": pl.String,
}


@dataclass
class Sources:
    """Where each table came from, so preparation's messages about its contents name it."""

    interactions: Path
    items: Path
    covers: Path


@dataclass
class RawData:
    """Validated raw tables, whatever format they were read from.

    ``interactions`` has user_id, item_id (strings) and timestamp (int64, one unit);
    ``items`` has item_id, title, tag, description (strings, "" when absent) and one
    float64 column per name in ``count_columns`` (null = missing, finite and >= 0
    otherwise). ``cover_files`` maps an item id to its cover for every cover found;
    ``counts`` holds the reader's repairs, which land in the manifest.
    """

    interactions: pl.DataFrame
    items: pl.DataFrame
    cover_files: dict[str, Path]
    count_columns: list[str]
    sources: Sources
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A reader written for a new format fails here, naming the column, rather than
        # somewhere deep in preparation.
        items_schema = {**ITEM_TEXT_COLUMNS, **dict.fromkeys(self.count_columns, pl.Float64)}
        for name, table, schema in (
            ("interactions", self.interactions, INTERACTION_COLUMNS),
            ("items", self.items, items_schema),
        ):
            for col, dtype in schema.items():
                if table.schema.get(col) != dtype:
                    raise TypeError(
                        f"RawData.{name} needs column {col!r} of type {dtype}; "
                        f"the reader gave {table.schema.get(col) or 'none'}"
                    )


class Reader(ABC):
    """One raw dataset format: reads a directory into :class:`RawData`.

    Settings arrive as keyword arguments from the ``data.reader`` node; a reader checks
    them when it is built, so a bad setting is refused before any file is read.
    """

    @abstractmethod
    def read(self, root: Path) -> RawData:
        """The raw tables under ``root``; a problem in the files is a one-line DataError."""

    @abstractmethod
    def inputs(self, root: Path) -> dict[str, Path]:
        """The raw inputs under ``root`` by name: files, identified by their bytes, and
        folders, identified by their listings. Preparation fingerprints them to tell
        whether an earlier prepared dataset still matches the raw data."""


def build_reader(node: Mapping[str, Any]) -> Reader:
    """The reader ``data.reader`` names; every problem with the node is one ConfigError line."""
    target = node.get("_target_")
    if not target:
        raise ConfigError("config data.reader: _target_ is required (a Reader class path)")
    try:
        reader = instantiate(node)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, MultirecError):
            raise exc.__cause__ from None
        lines = [ln.strip() for ln in str(exc.__cause__ or exc).splitlines() if ln.strip()]
        why = lines[-1] if lines else type(exc).__name__
        if str(exc).startswith("Error locating target"):
            raise ConfigError(
                f"config data.reader: _target_={target} cannot be imported ({why})"
            ) from None
        raise ConfigError(f"config data.reader ({target}): {why}") from None
    if not isinstance(reader, Reader):
        raise ConfigError(
            f"config data.reader: _target_={target} is not a multirec Reader "
            "(a subclass of multirec.data.readers.Reader)"
        )
    return reader
