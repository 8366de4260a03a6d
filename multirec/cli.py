"""Shared plumbing for the thin ``python -m multirec.<entry>`` Hydra apps."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from multirec.errors import MultirecError

T = TypeVar("T")
log = logging.getLogger("multirec")


def user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn a :class:`MultirecError` into one line on stderr and exit status 2.

    Programming errors still raise with a full traceback: only errors the user can fix
    by changing input or configuration are shortened.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MultirecError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
