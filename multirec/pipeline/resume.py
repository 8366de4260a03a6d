"""Exact resume: a run killed at any step continues as if it had never stopped.

Lightning restores the weights, the optimiser, the loops and (through
:class:`multirec.data.datamodule.EpochBatches`) the position inside the epoch.
:class:`RandomStates` adds what it does not: every random generator training draws from
(dropout, id dropout, anything using NumPy's or Python's global generator), so the first
resumed step draws what the uninterrupted run drew.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch


class RandomStates(L.Callback):
    """Saves the global random generators with every checkpoint and restores them on resume."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def run_dir_of(ckpt_path: str | Path) -> Path | None:
    """The run directory a checkpoint was written into (``<run>/checkpoints/x.ckpt``), if any."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None
