"""Extraction over several processes (``torchrun``): devices, ranks and the shard of
chunks each rank extracts. With one process every helper is a no-op."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from multirec.errors import MultirecError
from multirec.runtime.devices import device_name

T = TypeVar("T")


def resolve_device(device: str) -> torch.device:
    """The torch device of ``device`` (see :func:`multirec.runtime.devices.device_name`);
    plain ``cuda`` is the rank's own GPU."""
    dev = torch.device(device_name(device))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def init_distributed(device: str) -> None:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1), unless joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dev = resolve_device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank_zero() -> bool:
    return rank_world()[0] == 0


def rank_zero_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the other ranks (which then find its result on disk)."""
    rank, world = rank_world()
    if world > 1 and rank != 0:
        dist.barrier()
    result = fn()
    if world > 1 and rank == 0:
        dist.barrier()
    return result


def on_rank0(fn: Callable[[], T], rank: int, world: int) -> T:
    """Run ``fn`` on rank 0 only and hand its result, or its user error, to every rank."""
    if world == 1:
        return fn()
    box: list[Any] = [None]
    if rank == 0:
        try:
            box = [("ok", fn())]
        except MultirecError as exc:
            box = [("error", exc)]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def chunk_ranges(n: int, chunk_rows: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]


def shard_chunks(n: int, chunk_rows: int, rank: int, world: int) -> list[tuple[int, int]]:
    """The contiguous run of whole chunks that ``rank`` of ``world`` extracts."""
    chunks = chunk_ranges(n, chunk_rows)
    return chunks[rank * len(chunks) // world : (rank + 1) * len(chunks) // world]


def shard_path(final: Path, rank: int, world: int) -> Path:
    suffix = ".partial" if world == 1 else f".rank{rank}-of-{world}.partial"
    return final.with_name(final.name + suffix)


def merge_path(final: Path) -> Path:
    """Where rank 0 merges the shards before the result takes the final name."""
    return final.with_name(final.name + ".merge.partial")
