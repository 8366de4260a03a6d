"""Feeding an encoder: batches planned inside chunks, decoded in DataLoader workers.

Batches never cross a chunk (so a chunk is written as soon as its last batch is in, and 1
and N processes form identical batches); texts are sorted by length inside a chunk, so
padding stays small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from multirec.data.dataset import PreparedDataset
from multirec.features.cache import OK
from multirec.features.encoders.base import Encoder, Preprocessing
from multirec.runtime import current_policy


def plan_batches(
    chunks: Sequence[tuple[int, int]], batch_size: int, lengths: np.ndarray | None
) -> list[list[int]]:
    """Batches of item indices that never cross a chunk; long texts first within a chunk."""
    batches = []
    for a, b in chunks:
        idx = np.arange(a, b)
        if lengths is not None:
            idx = idx[np.argsort(-lengths[a:b], kind="stable")]
        batches += [idx[i : i + batch_size].tolist() for i in range(0, len(idx), batch_size)]
    return batches


class _Items(Dataset):
    """Item i -> (i, model input or None, status); runs in DataLoader workers."""

    def __init__(self, inputs: Sequence, load_item: Callable[[Any], tuple[Any, int]]) -> None:
        self.inputs = inputs
        self.load_item = load_item

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[int, Any, int]:
        value, status = self.load_item(self.inputs[i])
        return i, value, status


class _Collate:
    """Batch the valid inputs with the encoder's collate; keep every item's position and status."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate

    def __call__(
        self, samples: list[tuple[int, Any, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        positions = torch.tensor([s[0] for s in samples], dtype=torch.int64)
        status = torch.tensor([s[2] for s in samples], dtype=torch.uint8)
        values = [s[1] for s in samples if s[2] == OK]
        return positions, status, (self.collate(values) if values else None)


def item_loader(
    encoder: Encoder,
    pre: Preprocessing,
    dataset: PreparedDataset,
    chunks: Sequence[tuple[int, int]],
    dev: torch.device,
    num_workers: int | None,
) -> DataLoader:
    """Batches ``(positions, status, model inputs or None)`` of the items in ``chunks``, in plan order.

    ``num_workers`` None: the thread policy's (:mod:`multirec.runtime`).
    """
    if num_workers is None:
        num_workers = current_policy().workers
    inputs = encoder.item_inputs(dataset)
    return DataLoader(
        _Items(inputs, pre.load_item),
        batch_sampler=plan_batches(chunks, encoder.batch_size, encoder.input_lengths(inputs)),
        collate_fn=_Collate(pre.collate),
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
        prefetch_factor=4 if num_workers else None,
    )


def to_device(x: Any, dev: torch.device) -> Any:
    """A batch (tensor or dict of tensors) on ``dev``."""
    if isinstance(x, torch.Tensor):
        return x.to(dev, non_blocking=True)
    return {k: to_device(v, dev) for k, v in x.items()}


def autocast(precision: str, dev: torch.device) -> contextlib.AbstractContextManager:
    """Matrix products and convolutions in ``precision`` (the rest stays float32), as the
    encoder's setting resolves (:meth:`Encoder.compute_precision`)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=getattr(torch, precision))
