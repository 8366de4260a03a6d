"""Shared plumbing for the thin ``python -m multirec.<entry>`` Hydra apps: one-line user
errors, the terminal's share of the log, and the configuration printed at the start."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.tree import Tree

import multirec.tracking  # noqa: F401  (registers the resolvers naming runs in conf/)
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

# Lightning's own pytree helper builds torch's deprecated LeafSpec on every training step;
# nothing a run passes changes that, and the user cannot act on it
warnings.filterwarnings(
    "ignore",
    message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    category=FutureWarning,
    module=r"lightning\.pytorch\.utilities\._pytree",
)


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


class ConsoleFilter(logging.Filter):
    """The terminal's share of the log (``conf/hydra/job_logging/multirec.yaml``): warnings
    and errors from anywhere, information from multirec only. Libraries' information
    (Lightning's hardware lines and tips, model loading) goes to the run's log file alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            record.levelno >= logging.WARNING
            or record.name in ("multirec", "__main__")
            or record.name.startswith("multirec.")
        )


def in_sweep() -> bool:
    """Whether this run is one job of a Hydra multirun (whose end prints the sweep's table)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _group_root(choice: str) -> str:
    """The top-level config key a Hydra choice fills: ``protocol@protocols.full`` fills
    ``protocols``, ``encoder/visual`` fills ``encoder``."""
    return choice.partition("@")[2].split(".")[0] if "@" in choice else choice.split("/")[0]


def config_tree(cfg: DictConfig) -> Tree:
    """The run at a glance: a branch per config section filled from a group, naming the
    choices, with the command line's overrides of that section under it; then the other
    overrides and the top-level settings. Search spaces (``search``) are left out."""
    hc = HydraConfig.get()
    choices = {
        k: v
        for k, v in hc.runtime.choices.items()
        if v is not None and not k.startswith("hydra") and not k.endswith("search")
    }
    overrides = [(o.lstrip("+~").partition("=")[0], o) for o in hc.overrides.task]
    tree = Tree(f"[bold]{hc.job.name}[/]")
    for section in cfg:
        mine = {k: v for k, v in choices.items() if _group_root(k) == section}
        if not mine:
            continue
        own = [v for k, v in mine.items() if "/" not in k]
        nested = [f"{k.rsplit('/', 1)[1]}: {v}" for k, v in mine.items() if "/" in k]
        label = f"{section}: [cyan]{', '.join(own)}[/]"
        branch = tree.add(label + (f" ({', '.join(nested)})" if nested else ""))
        for key, override in overrides:
            if key.split(".")[0].split("/")[0] == section and key not in choices:
                branch.add(f"[yellow]{override}[/]")
    grouped = {_group_root(k) for k in choices}
    rest = [o for k, o in overrides if k.split(".")[0].split("/")[0] not in grouped]
    scalars = [
        f"{k}={v}" for k, v in cfg.items() if not isinstance(v, DictConfig) and v is not None
    ]
    tree.add(" ".join([*(f"[yellow]{o}[/]" for o in rest), *scalars]))
    tree.add("[dim]every setting: .hydra/config.yaml in the run directory[/]")
    return tree


def print_config_tree(cfg: DictConfig) -> None:
    """Print :func:`config_tree`, unless this is one job of a sweep (Hydra names its overrides)."""
    if not in_sweep():
        Console().print(config_tree(cfg))


def overridden(group: str) -> bool:
    """Whether ``group=...`` or a ``group.key=...`` was given on the command line (False
    outside a Hydra app): a default that another input can supply is then not the user's word."""
    if not HydraConfig.initialized():
        return False
    keys = (o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task)
    return any(k == group or k.startswith(f"{group}.") or k.startswith(f"{group}/") for k in keys)
