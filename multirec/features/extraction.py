"""Run an encoder over every item of a prepared dataset, once, into the feature cache.

:func:`ensure_cache` is what training and ``python -m multirec.extract`` call: it returns
the cache of (dataset, encoder), reusing a finished one ("cache hit"), resuming an
unfinished one, or building it. A build holds a lock beside the cache, so processes that
need the same missing cache at once (parallel sweep jobs) wait for one build and reuse it.

The work is planned in chunks of ``chunk_rows`` consecutive items. Each chunk is cut
into batches (text sorted by length inside the chunk, so padding stays small); DataLoader
workers decode covers or tokenise texts while the model runs; a chunk is written and
recorded as done when its last batch is in. Under torch.distributed (``torchrun``) each
rank takes a contiguous range of whole chunks and writes its own shard file, and rank 0
merges the shards. Since batches are formed inside chunks the same way in every layout,
1 and N processes feed the model identical batches and store identical features.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import time
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

import multirec
from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError, MultirecError
from multirec.features.batching import autocast, item_loader, to_device
from multirec.features.cache import (
    OK,
    STORAGE_DTYPES,
    ShardWriter,
    cache_file,
    check_finished,
    check_space,
    check_writable,
    disk_errors,
    load_features,
    lock_file,
    open_h5,
    verify_checksums,
)
from multirec.features.distributed import (
    merge_path,
    on_rank0,
    rank_world,
    resolve_device,
    shard_chunks,
    shard_path,
)
from multirec.features.encoders.base import Encoder, Preprocessing
from multirec.io import exclusive_lock, fingerprint
from multirec.runtime import model_threads
from multirec.runtime.inference import channels_last, inference_ready, keep_freed_memory
from multirec.runtime.timing import format_duration

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_CHUNK_ROWS = 1024
DEFAULT_LOCK_TIMEOUT_S = 2 * 3600  # longest wait for another process's build of the same cache
VERSIONED = (
    "torch",
    "torchvision",
    "timm",
    "transformers",
    "sentence-transformers",
    "h5py",
    "numpy",
    "pillow",
)


def instantiate_encoder(cfg: DictConfig | dict | None) -> Encoder | None:
    """The encoder a config node describes; None for an empty node (the ``none`` choice)."""
    if cfg is None or len(cfg) == 0:
        return None
    try:
        encoder = instantiate(cfg)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, MultirecError):
            raise cause from None
        lines = [ln.strip() for ln in str(cause or exc).splitlines() if ln.strip()]
        raise ConfigError(
            f"encoder config {cfg.get('_target_')}: {lines[-1] if lines else exc}"
        ) from None
    if not isinstance(encoder, Encoder):
        raise ConfigError(
            f"encoder config _target_={cfg.get('_target_')} is not a multirec Encoder class"
        )
    return encoder


def library_versions() -> dict[str, str]:
    out = {"multirec": multirec.__version__}
    for name in VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def ensure_cache(
    dataset: PreparedDataset,
    encoder_cfg: DictConfig | None,
    cache_dir: Path,
    *,
    device: str = "cpu",
    num_workers: int | None = 0,
    progress: bool = True,
    rebuild: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> Path | None:
    """Path of the finished feature cache of (``dataset``, encoder); build it if needed.

    Returns None when ``encoder_cfg`` is the ``none`` choice. A finished cache with the
    same fingerprints is reused (logged as ``cache hit``); an unfinished one resumes; a
    corrupt file, or one under this name built from other inputs, is refused. ``rebuild``
    builds the cache anew in any case, replacing the file only once the new one is
    finished. While another process builds the same cache this one waits for it (at
    most ``lock_timeout_s``) and reuses its result. Under torch.distributed every rank
    must call this; items are sharded, and rank 0 holds the lock for all of them.
    ``num_workers`` None: as many DataLoader workers as the thread policy gives.
    """
    encoder = instantiate_encoder(encoder_cfg)
    if encoder is None:
        return None
    dev = resolve_device(device)
    identity = encoder.identity(dev)
    encoder_fp = fingerprint(identity)
    final = cache_file(
        Path(cache_dir), encoder.modality, encoder.name, dataset.fingerprint, encoder_fp
    )
    rank, world = rank_world()
    with contextlib.ExitStack() as held:
        hit = on_rank0(
            lambda: _claim(final, dataset, encoder_fp, rebuild, lock_timeout_s, held), rank, world
        )
        if hit:
            log.info("cache hit: %s", final)
            return final
        _build(
            dataset,
            encoder,
            identity,
            encoder_fp,
            final,
            dev,
            num_workers,
            progress,
            chunk_rows,
        )
    return final


Side = tuple[np.ndarray, np.ndarray]  # features [n_items, dim] and their validity [n_items]


def cached_features(
    dataset: PreparedDataset,
    encoder_cfg: DictConfig,
    cache_dir: str | Path,
    device: str = "cpu",
    num_workers: int | None = 2,
) -> tuple[dict[str, Side | None], dict[str, str | None]]:
    """Each side's features (None for the ``none`` choice), extracting any missing cache
    (``num_workers`` decode covers beside the encoder), and each side's cache identity (its
    file name, or None): what the neural models and the content baselines are given."""
    sides: dict[str, Side | None] = {}
    identity: dict[str, str | None] = {}
    for side in ("visual", "text"):
        path = ensure_cache(
            dataset, encoder_cfg[side], Path(cache_dir), device=device, num_workers=num_workers
        )
        if path is None:
            sides[side], identity[side] = None, None
            continue
        feats, ok, _ = load_features(path)
        sides[side] = (feats, ok)
        identity[side] = Path(path).name
    return sides, identity


def _claim(
    final: Path,
    dataset: PreparedDataset,
    encoder_fp: str,
    rebuild: bool,
    lock_timeout_s: float,
    held: contextlib.ExitStack,
) -> bool:
    """True when a finished cache can be reused; otherwise enter the build lock into ``held``.

    A good cache is reused without the lock. Building happens under it, after looking
    again: the process that held it may just have finished the very cache this one needs.
    ``rebuild`` builds anew whatever is there, from the first row: the file under the final
    name stays in place (readers keep using it) until the finished build replaces it.
    """
    if not rebuild and _reusable(final, dataset, encoder_fp):
        return True
    check_writable(final.parent)
    held.enter_context(exclusive_lock(lock_file(final), lock_timeout_s, f"building {final}"))
    if not rebuild:
        return _reusable(final, dataset, encoder_fp)
    log.info("rebuild=true: building %s anew; it is replaced when the build finishes", final)
    _, world = rank_world()
    for partial in [shard_path(final, r, world) for r in range(world)] + [merge_path(final)]:
        partial.unlink(missing_ok=True)  # unfinished rows of an earlier build are not reused
    return False


def _reusable(final: Path, dataset: PreparedDataset, encoder_fp: str) -> bool:
    """Whether ``final`` is a finished cache of these inputs; a bad file is an error."""
    if not final.exists():
        return False
    check_finished(final, dataset.fingerprint, encoder_fp, dataset.n_items)
    return True


def _build(
    dataset: PreparedDataset,
    encoder: Encoder,
    identity: dict,
    encoder_fp: str,
    final: Path,
    dev: torch.device,
    num_workers: int | None,
    progress: bool,
    chunk_rows: int,
) -> None:
    rank, world = rank_world()
    n = dataset.n_items
    mine = shard_chunks(n, chunk_rows, rank, world)
    partial = shard_path(final, rank, world)

    pre = encoder.preprocessing()
    net = encoder.network().to(dev)
    with torch.inference_mode(), autocast(encoder.compute_precision(dev), dev):
        dim = int(net(to_device(pre.collate([pre.probe]), dev)).shape[-1])
    itemsize = np.dtype(STORAGE_DTYPES[encoder.dtype]).itemsize
    shard_rows = sum(b - a for a, b in mine)
    check_space(final.parent, shard_rows * (dim * itemsize + 2) + (1 << 20), partial)

    attrs = _cache_attrs(dataset, encoder, identity, encoder_fp, pre, dim, chunk_rows, dev, world)
    t0 = time.perf_counter()
    done_before = 0
    if mine:
        start, stop = mine[0][0], mine[-1][1]
        with disk_errors(partial):
            writer = ShardWriter.open(partial, start, stop, dim, encoder.dtype, attrs)
        try:
            done_before = writer.rows_done
            _log_start(encoder, partial, start, stop, done_before, dev)
            todo = [(a, b) for a, b in mine if a >= start + done_before]
            with disk_errors(partial):
                _run(
                    encoder,
                    pre,
                    net,
                    dataset,
                    todo,
                    writer,
                    dev,
                    num_workers,
                    progress and rank == 0,
                    stop - start,
                )
                if world == 1:
                    writer.finish(final, {"elapsed_s": time.perf_counter() - t0})
        finally:
            writer.close()
    if world > 1:
        dist.barrier()
        if rank == 0:
            with disk_errors(final):
                _merge(
                    final, n, chunk_rows, world, dim, encoder.dtype, attrs, time.perf_counter() - t0
                )
        dist.barrier()
    rate = (shard_rows - done_before) / max(time.perf_counter() - t0, 1e-9)
    log.info("feature cache written: %s (%.1f items/s)", final, rate)


def _cache_attrs(
    dataset: PreparedDataset,
    encoder: Encoder,
    identity: dict,
    encoder_fp: str,
    pre: Preprocessing,
    dim: int,
    chunk_rows: int,
    dev: torch.device,
    world: int,
) -> dict:
    """What the cache file records: the fingerprints checked before reuse, and how the
    features were made, for whoever reads the file later."""
    return {
        "dataset_fingerprint": dataset.fingerprint,
        "encoder_fingerprint": encoder_fp,
        "encoder": identity,
        "model": encoder.model,
        "modality": encoder.modality,
        "dim": dim,
        "dtype": encoder.dtype,
        "n_items": dataset.n_items,
        "chunk_rows": chunk_rows,
        "dataset": str(dataset.root),
        "source": encoder.source.origin,
        "versions": library_versions(),
        "preprocessing": pre.describe,
        "device": str(dev),
        "world_size": world,
    }


def _log_start(
    encoder: Encoder, partial: Path, start: int, stop: int, done_before: int, dev: torch.device
) -> None:
    """Say whether this shard resumes an unfinished file or starts one, and on what."""
    if done_before:
        log.info("resuming %s at item %d of %d", partial, start + done_before, stop)
    else:
        log.info(
            "extracting %s features of %d items with %s (%s) on %s in %s into %s",
            encoder.modality,
            stop - start,
            encoder.model,
            encoder.source.origin,
            dev,
            encoder.compute_precision(dev),
            partial,
        )


def _run(
    encoder: Encoder,
    pre: Preprocessing,
    net: torch.nn.Module,
    dataset: PreparedDataset,
    chunks: list[tuple[int, int]],
    writer: ShardWriter,
    dev: torch.device,
    num_workers: int | None,
    progress: bool,
    total: int,
) -> None:
    """Encode ``chunks`` (consecutive item ranges) and commit each one as it completes.

    The model runs folded and channels-last, with the intra-op threads the thread policy
    gives it beside the DataLoader workers (:mod:`multirec.runtime`).
    """
    if not chunks:
        return
    loader = item_loader(encoder, pre, dataset, chunks, dev, num_workers)
    with model_threads(loader.num_workers), keep_freed_memory():
        net = inference_ready(net, to_device(pre.collate([pre.probe]), dev), dev)
        _log_estimate(encoder, pre, net, dataset, chunks, dev)
        _encode(encoder, net, loader, chunks, writer, dev, progress, total)


def _log_estimate(
    encoder: Encoder,
    pre: Preprocessing,
    net: torch.nn.Module,
    dataset: PreparedDataset,
    chunks: list[tuple[int, int]],
    dev: torch.device,
) -> None:
    """Time the model on one batch of real inputs spread over ``chunks`` and log how long
    the chunks will take at that rate (decoding is meant to hide behind the model)."""
    inputs = encoder.item_inputs(dataset)
    todo = np.concatenate([np.arange(a, b) for a, b in chunks])
    picks = todo[np.linspace(0, len(todo) - 1, min(encoder.batch_size, len(todo))).astype(int)]
    valid = [x for x, st in map(pre.load_item, (inputs[i] for i in picks)) if st == OK]
    if not valid:
        return
    batch = channels_last(to_device(pre.collate(valid), dev))
    with torch.inference_mode(), autocast(encoder.compute_precision(dev), dev):
        net(batch)  # first call: kernels chosen, weights reordered
        t0 = time.perf_counter()
        net(batch)
        _sync(dev)
    rate = len(valid) / max(time.perf_counter() - t0, 1e-9)
    log.info(
        "%s %s: %d items; the model alone runs %.1f items/s on %d threads here, so about %s",
        encoder.modality,
        encoder.name,
        len(todo),
        rate,
        torch.get_num_threads(),
        format_duration(len(todo) / rate),
    )


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _encode(
    encoder: Encoder,
    net: torch.nn.Module,
    loader: DataLoader,
    chunks: list[tuple[int, int]],
    writer: ShardWriter,
    dev: torch.device,
    progress: bool,
    total: int,
) -> None:
    """The forward loop: every batch through the model, each chunk committed when full."""
    bar = tqdm(
        total=total,
        initial=total - sum(b - a for a, b in chunks),
        unit="item",
        desc=f"{encoder.modality} {encoder.name}",
        disable=not progress,
        dynamic_ncols=True,
    )
    pending = iter(chunks)
    a, b = next(pending)
    feats = np.zeros((b - a, writer.f["features"].shape[1]), dtype=np.float32)
    status = np.zeros(b - a, dtype=np.uint8)
    filled = 0
    with torch.inference_mode(), autocast(encoder.compute_precision(dev), dev):
        for positions, batch_status, x in loader:
            pos = positions.numpy() - a
            st = batch_status.numpy()
            if x is not None:
                feats[pos[st == OK]] = net(channels_last(to_device(x, dev))).float().cpu().numpy()
            status[pos] = st
            filled += len(pos)
            bar.update(len(pos))
            if filled == b - a:
                writer.commit(a, feats, status, encoder.slot)
                nxt = next(pending, None)
                if nxt is not None:
                    a, b = nxt
                    feats = np.zeros((b - a, feats.shape[1]), dtype=np.float32)
                    status = np.zeros(b - a, dtype=np.uint8)
                    filled = 0
    bar.close()


def _merge(
    final: Path,
    n: int,
    chunk_rows: int,
    world: int,
    dim: int,
    dtype: str,
    attrs: dict,
    elapsed: float,
) -> None:
    """Rank 0: copy every rank's shard into the final file, then remove the shards."""
    merged = ShardWriter.open(merge_path(final), 0, n, dim, dtype, attrs)
    try:
        for r in range(world):
            chunks = shard_chunks(n, chunk_rows, r, world)
            if not chunks:
                continue
            with open_h5(shard_path(final, r, world)) as f:
                verify_checksums(f, shard_path(final, r, world))
                for a, b in chunks:
                    if a >= merged.rows_done:
                        start = chunks[0][0]
                        merged.commit(
                            a,
                            f["features"][a - start : b - start],
                            f["status"][a - start : b - start],
                        )
        merged.finish(final, {"elapsed_s": elapsed})
    finally:
        merged.close()
    for r in range(world):
        shard_path(final, r, world).unlink(missing_ok=True)
