"""Typed schema of the ``data`` config group (``conf/data/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
class FilesConfig:
    interactions: str = "interactions.csv"
    items: str = "item_info.csv"
    covers: str = "covers"


@dataclass
class ColumnsConfig:
    item_id: str = "item_id"
    user_id: str = "user_id"
    timestamp: str = "timestamp"
    title: str = "title"
    tag: str = "tag"
    description: str = "description"
    counts: list[str] = field(default_factory=lambda: list(COUNT_COLUMNS))


@dataclass
class TextConfig:
    template: str = "{title}. {tag}. {description}"


@dataclass
class CoversConfig:
    policy: str = "drop"
    min_side: int = 32
    max_pixels: int = 89_478_485
    workers: int = 2


@dataclass
class TagsConfig:
    min_count: int = 5


@dataclass
class SplitConfig:
    strategy: str = "random"
    ratios: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 42


@dataclass
class DataConfig:
    """Everything that defines a prepared dataset; all of it enters the fingerprint."""

    name: str = "pixelrec"
    root: str = "???"
    sample: Any = None  # generator kwargs (size, seed, ...) when the data is a synthetic sample
    files: FilesConfig = field(default_factory=FilesConfig)
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    timestamp_unit: str = "auto"  # auto (one unit, mixed refused) | s | ms (convert to it)
    duplicates: str = "drop"
    text: TextConfig = field(default_factory=TextConfig)
    covers: CoversConfig = field(default_factory=CoversConfig)
    tags: TagsConfig = field(default_factory=TagsConfig)
    kcore: int = 5
    split: SplitConfig = field(default_factory=SplitConfig)
