"""Validate Hydra config nodes against typed schemas, so unknown keys are errors.

Hydra already refuses ``key=value`` overrides of keys that do not exist; this closes
the other hole an earlier implementation fell into: keys written into a YAML file that
nothing reads. A node is merged into a structured (dataclass) config, which rejects
unknown keys and wrong types, and the error names the full key path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from multirec.errors import ConfigError, MultirecError

T = TypeVar("T")


def project_root() -> Path:
    """Where outputs go when no Hydra run says: ``MULTIREC_ROOT``, else the working
    directory, as ``conf/paths``'s ``root_dir`` resolves inside a run."""
    return Path(os.environ.get("MULTIREC_ROOT", os.getcwd()))


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


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures are one line: an error the object itself
    raises for a bad value (a :class:`MultirecError`) passes through as it is; anything else
    (a wrong type, an unknown argument) names the config key."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, MultirecError):
            raise cause from None
        key = node._get_full_key(None) if isinstance(node, DictConfig) else "?"
        detail = str(cause or exc).strip().splitlines()
        raise ConfigError(f"config {key}: {detail[0] if detail else exc}") from None
