"""Check the numbers a run is configured with before any work starts.

A wrong type or range (``trainer.max_epochs=abc``, ``model.dim=-1``, a dropout of 2) would
otherwise surface minutes later, after preparation and extraction, as a traceback from deep
inside PyTorch or Lightning -- or not at all. The rules go by key name, so they cover every
model, fusion and loss that uses the common names; each class still checks what is specific
to it when it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig

from multirec.errors import ConfigError

GROUPS = ("trainer", "datamodule", "model", "fusion", "loss")


def _whole(low: int) -> tuple[Callable[[Any], bool], str]:
    return (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
        f"a whole number >= {low}",
    )


def _number(ok: Callable[[float], bool], what: str) -> tuple[Callable[[Any], bool], str]:
    return (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and ok(float(v)),
        what,
    )


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_epochs": _whole(1),
    "min_epochs": _whole(0),
    "batch_size": _whole(1),
    "num_negatives": _whole(1),
    "dim": _whole(1),
    "factors": _whole(1),
    "heads": _whole(1),
    "layers": _whole(0),
    "hidden": _whole(1),
    "projection_hidden": _whole(1),
    "head_hidden": _whole(1),
    "lr": _number(lambda v: v > 0, "a number > 0"),
    "weight_decay": _number(lambda v: v >= 0, "a number >= 0"),
    "reg": _number(lambda v: v >= 0, "a number >= 0"),
    "dropout": _number(lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "id_dropout": _number(lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "alpha": _number(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "temperature": _number(lambda v: v > 0, "a number > 0"),
}


def _leaves(node: Any, key: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, DictConfig | dict):
        for k, v in node.items():
            yield from _leaves(v, f"{key}.{k}")
    else:
        yield key, key.rsplit(".", 1)[-1], node


def check_settings(cfg: DictConfig) -> None:
    """One-line :class:`ConfigError` for the first value of a known key that is out of range."""
    for group in GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        for full, name, value in _leaves(node, group):
            rule = RULES.get(name)
            if rule is not None and value is not None and not rule[0](value):
                raise ConfigError(f"{full} must be {rule[1]}, got {value!r}")
