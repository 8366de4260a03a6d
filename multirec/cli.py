"""Shared plumbing for the thin ``python -m multirec.<entry>`` Hydra apps."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from multirec.errors import MultirecError
from multirec.runtime.devices import trainer_accelerator, trainer_devices, trainer_precision

T = TypeVar("T")
log = logging.getLogger("multirec")

# run folders are named by start time and process id (``${now:...}_${pid:}``): two runs
# started in the same second never share a folder, so neither overwrites the other's files
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
# conf/trainer derives Lightning's settings from the one ``device`` setting
OmegaConf.register_new_resolver("device_accelerator", trainer_accelerator, replace=True)
OmegaConf.register_new_resolver("device_devices", trainer_devices, replace=True)
OmegaConf.register_new_resolver("device_precision", trainer_precision, replace=True)


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


def overridden(group: str) -> bool:
    """Whether ``group=...`` or a ``group.key=...`` was given on the command line (False
    outside a Hydra app): a default that another input can supply is then not the user's word."""
    if not HydraConfig.initialized():
        return False
    keys = (o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task)
    return any(k == group or k.startswith(f"{group}.") or k.startswith(f"{group}/") for k in keys)
