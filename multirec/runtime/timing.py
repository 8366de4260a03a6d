"""Durations as people read them, for the time estimates multirec logs before long steps."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h`` or ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
