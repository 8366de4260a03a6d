"""Typed schema of the ``data`` config group (``conf/data/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multirec.data.pixelrec import pixelrec_node


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
    strategy: str = "random"  # random | leave_one_out | temporal | cold_items (see splits.py)
    ratios: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 42


@dataclass
class DataConfig:
    """Everything that defines a prepared dataset; all of it enters the fingerprint."""

    name: str = "pixelrec"
    root: str = "???"
    sample: Any = None  # generator kwargs (size, seed, ...) when the data is a synthetic sample
    # The raw format's reader, a _target_ node (see readers.py); None means PixelRec's.
    # A default node here would be merged key by key into another reader's node.
    reader: dict[str, Any] | None = None
    duplicates: str = "drop"
    text: TextConfig = field(default_factory=TextConfig)
    covers: CoversConfig = field(default_factory=CoversConfig)
    tags: TagsConfig = field(default_factory=TagsConfig)
    kcore: int = 5
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if self.reader is None:
            self.reader = pixelrec_node()
