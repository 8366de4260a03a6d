"""Shared plumbing for the thin ``python -m multirec.<entry>`` Hydra apps."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import OmegaConf

import multirec.tracking  # noqa: F401  (registers the resolvers naming runs in conf/)
from multirec.errors import MultirecError

T = TypeVar("T")
log = logging.getLogger("multirec")

# run folders are named by start time and process id (``${now:...}_${pid:}``): two runs
# started in the same second never share a folder, so neither overwrites the other's files
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


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
