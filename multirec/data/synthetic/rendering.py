"""Writing every cover file, in a process pool when there are many."""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from multirec.data.synthetic import streams
from multirec.data.synthetic.cover_art import draw_cover
from multirec.data.synthetic.defects import encode_cover

if TYPE_CHECKING:
    from multirec.data.synthetic.world import World

COVER_CHUNK = 256
# Below this many covers one process is fast enough (small: ~1,100 covers in seconds), so
# only big samples pay for worker start-up and need the caller's ``__main__`` guard.
POOL_MIN_COVERS = 10_000


@dataclass(frozen=True)
class _CoverJob:
    """One chunk of covers; picklable so a process pool can run it."""

    directory: str
    seed: int
    size: int
    styles: dict[str, np.ndarray]
    indices: np.ndarray
    item_ids: list[str]
    topics: np.ndarray
    defects: list[str]
    png: np.ndarray


def write_covers(directory: Path, world: World, seed: int, size: int, progress: bool) -> None:
    """Render all covers, in a process pool when there are many.

    Workers are spawned, not forked: the parent may hold polars' and torch's threads,
    which a fork would copy in an unknown state. Spawning re-imports the caller's main
    module, so scripts calling this for a big sample need ``if __name__ == "__main__"``.
    """
    directory.mkdir()
    n = len(world.item_ids)
    jobs = _jobs(directory, world, seed, size)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(len(jobs), cpus) if n >= POOL_MIN_COVERS else 1
    with tqdm(total=n, desc="covers", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                bar.update(_render_chunk(job))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for done in pool.map(_render_chunk, jobs):
                    bar.update(done)


def _jobs(directory: Path, world: World, seed: int, size: int) -> list[_CoverJob]:
    """The covers split into chunks of about ``COVER_CHUNK`` items."""
    n = len(world.item_ids)
    return [
        _CoverJob(
            directory=str(directory),
            seed=seed,
            size=size,
            styles=world.styles,
            indices=idx,
            item_ids=[str(s) for s in world.item_ids[idx]],
            topics=world.cover_topic[idx],
            defects=[str(s) for s in world.cover_defect[idx]],
            png=world.cover_png[idx],
        )
        for idx in np.array_split(np.arange(n), max(1, math.ceil(n / COVER_CHUNK)))
    ]


def _render_chunk(job: _CoverJob) -> int:
    """Draw, encode and write one chunk of covers; returns how many items it handled."""
    for k, index in enumerate(job.indices):
        rng = streams.stream(job.seed, streams.COVERS, int(index))
        img = draw_cover(job.styles, int(job.topics[k]), job.size, rng)
        data = encode_cover(img, job.defects[k], bool(job.png[k]), rng)
        if data is not None:
            ext = "png" if job.png[k] else "jpg"
            (Path(job.directory) / f"{job.item_ids[k]}.{ext}").write_bytes(data)
    return len(job.indices)
