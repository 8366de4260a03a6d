"""Durations as people read them, for the time estimates multirec logs before long steps,
and the progress bars of steps that turn out long."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

PROGRESS_DELAY_S = 3.0  # a bar appears only once its step has run this long: short steps stay quiet


def progress(items: Iterable[T], desc: str, unit: str, enabled: bool = True) -> Iterator[T]:
    """``items`` with a progress bar on the terminal that appears only once the loop has run
    :data:`PROGRESS_DELAY_S` and is cleared when it ends."""
    with tqdm(
        items, desc=desc, unit=unit, delay=PROGRESS_DELAY_S, leave=False, disable=not enabled
    ) as bar:
        yield from bar


def format_duration(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h`` or ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
