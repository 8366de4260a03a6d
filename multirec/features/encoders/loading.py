"""Reading model folders and checkpoint files, with failures as one actionable line.

A model that loads with missing or mis-shaped weights would produce noise features that
end up cached, so every load here either returns a complete model or raises a
:class:`~multirec.errors.DataError` naming the file and the config key to fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multirec.errors import DataError


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load progress bars and key tables; we check the keys ourselves."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def load_errors(root: Path, what: str, slot: str) -> Iterator[None]:
    """A model folder that cannot be loaded, as one line naming it and the key to fix."""
    try:
        yield
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"{root} cannot be loaded as {what} ({first}); set {slot}.path to a copy of the model"
        ) from None


def from_pretrained(cls: Any, root: Path, slot: str) -> nn.Module:
    """Load a transformers model from ``root``, refusing weights that do not fit it.

    transformers re-initialises missing or mis-shaped tensors at random with a warning;
    features from such a model would be noise, so that is an error here. Unused tensors
    (CLIP's text tower when only its image tower is loaded) and a missing pooler head
    (not used by any output taken here) are fine.
    """
    with load_errors(root, cls.__name__, slot), quiet_transformers():
        # mis-shaped tensors are reported below, with their names, instead of raising here
        net, info = cls.from_pretrained(
            str(root), output_loading_info=True, ignore_mismatched_sizes=True
        )
    missing = [k for k in info.get("missing_keys", ()) if "pooler" not in k]
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
    if missing or mismatched:
        bad = ", ".join((missing + mismatched)[:3])
        raise DataError(
            f"{root} does not hold complete weights for {cls.__name__} (missing or mis-shaped: {bad}); "
            f"set {slot}.path to a checkpoint of this model"
        )
    return net


def load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or torch checkpoint, unwrapped from a training
    checkpoint's ``state_dict``/``model`` entry when there is one."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(file))
        else:
            sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the same thing to the user
        raise DataError(
            f"{file} is not a readable checkpoint ({type(exc).__name__}: {exc}); replace the file"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise DataError(
            f"{file} holds no state dict; point path= at a checkpoint of the model's weights"
        )
    return sd
