"""Experiment loggers as training builds them from ``conf/logger``."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import loggers


class WandbLogger(loggers.WandbLogger):
    """Lightning's W&B logger without the ``anonymous`` setting it always hands ``wandb.init``
    (``None`` unless asked for), which wandb answers on every run with a warning that the
    setting has no effect."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]
