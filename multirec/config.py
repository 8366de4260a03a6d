"""Validate Hydra config nodes against typed schemas, so unknown keys are errors.

Hydra already refuses ``key=value`` overrides of keys that do not exist; this closes
the other hole an earlier implementation fell into: keys written into a YAML file that
nothing reads. A node is merged into a structured (dataclass) config, which rejects
unknown keys and wrong types, and the error names the full key path.
"""

from __future__ import annotations

from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from multirec.errors import ConfigError

T = TypeVar("T")


def to_schema(node: DictConfig | dict[str, Any], schema: type[T], where: str) -> T:
    """Return ``node`` as an instance of the dataclass ``schema``.

    ``where`` is the node's key in the full config (e.g. ``data``), used in messages.
    """
    try:
        if isinstance(node, DictConfig):  # resolve while still attached to the full config
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        msg = str(exc).splitlines()[0]
        if "missing mandatory value" in msg:
            msg = f"a value is required (pass {where}.{key}=...)"
        raise ConfigError(
            f"config {where}.{key}: {msg}".replace(f"{where}.:", f"{where}:")
        ) from None


def plain(node: Any) -> Any:
    """``node`` as plain Python containers (resolved), so it can be saved as data."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node
