"""Feature extraction and cache benchmark (`python -m multirec.bench.features`).

1. For EfficientNet-Lite0 and MiniLM on the ``small`` sample: end-to-end extraction
   (DataLoader workers decoding/tokenising, model, HDF5 writes) against the bare model
   forward on ready-made input tensors -- the same batches, already in memory. The
   ratio says how much of the model's speed the pipeline keeps (target >= 0.85).
2. A pixelrec50k-size cache (83,000 items, 1280 + 384 dims, float16): write time, time
   and memory to load it whole (in a fresh process, page cache cold and warm), and
   random-batch read throughput through the lazy reader, as training reads it.

Options: ``--device auto|cpu|cuda``, ``--num-workers N``, ``--items N``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from multirec.bench.common import BENCH_DIR, in_subprocess, timed, write
from multirec.data.dataset import PreparedDataset
from multirec.features.cache import OK, FeatureReader, ShardWriter, load_features
from multirec.features.extraction import (
    DEFAULT_CHUNK_ROWS,
    autocast,
    chunk_ranges,
    ensure_cache,
    instantiate_encoder,
    item_loader,
    resolve_device,
    to_device,
)
from multirec.pipeline.stages import ensure_prepared

CONF = Path(__file__).resolve().parents[2] / "conf"
PIXELREC50K_ITEMS = 83_000
DIMS = {"visual": 1280, "text": 384}


def config(root: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="extract", overrides=["data=sample", "encoder=effnet_sbert"])
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.output_dir = str(root / "outputs" / "bench")
    return cfg


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def extraction(
    ds: PreparedDataset, enc_cfg: DictConfig, cache_dir: Path, device: str, num_workers: int
) -> dict:
    """End-to-end items/s vs the bare forward on the same batches, ready in memory."""
    dev = resolve_device(device)
    encoder = instantiate_encoder(enc_cfg)
    pre = encoder.preprocessing()
    net = encoder.network().to(dev)
    chunks = chunk_ranges(ds.n_items, DEFAULT_CHUNK_ROWS)
    ready = [
        to_device(x, dev)
        for _, _, x in item_loader(encoder, pre, ds, chunks, dev, num_workers)
        if x is not None
    ]
    n_valid = sum(len(x) if isinstance(x, torch.Tensor) else len(x["input_ids"]) for x in ready)

    def forward_all() -> None:
        with torch.inference_mode(), autocast(dev):
            for x in ready:
                net(x).float().cpu()
        _sync(dev)

    with torch.inference_mode(), autocast(dev):
        net(ready[0])  # warm-up
    _, bare_before = timed(forward_all)
    path = ensure_cache(
        ds, enc_cfg, cache_dir, device=device, num_workers=num_workers, progress=False
    )
    _, valid, attrs = load_features(path)
    _, bare_after = timed(forward_all)
    bare = (bare_before + bare_after) / 2
    e2e_rate = int(valid.sum()) / attrs["elapsed_s"]
    bare_rate = n_valid / bare
    return {
        "model": encoder.model,
        "items": ds.n_items,
        "valid_items": int(valid.sum()),
        "batch_size": encoder.batch_size,
        "num_workers": num_workers,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "end_to_end_s": attrs["elapsed_s"],
        "end_to_end_items_per_s": e2e_rate,
        "bare_forward_s": [bare_before, bare_after],
        "bare_forward_items_per_s": bare_rate,
        "ratio": e2e_rate / bare_rate,
    }


def _evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (this file only) for a cold read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def synthetic_cache(path: Path, n: int, dim: int) -> float:
    """Write an n x dim float16 cache the way extraction does; return seconds."""
    rng = np.random.default_rng(0)
    attrs = {
        "dataset_fingerprint": "bench",
        "encoder_fingerprint": f"bench{dim}",
        "chunk_rows": DEFAULT_CHUNK_ROWS,
        "n_items": n,
        "encoder": {"bench": dim},
        "model": "synthetic",
        "modality": "bench",
    }
    t0 = time.perf_counter()
    w = ShardWriter.open(path.with_name(path.name + ".partial"), 0, n, dim, "float16", attrs)
    block = rng.standard_normal((DEFAULT_CHUNK_ROWS, dim)).astype(np.float32)
    for a, b in chunk_ranges(n, DEFAULT_CHUNK_ROWS):
        w.commit(a, block[: b - a], np.full(b - a, OK, dtype=np.uint8))
    w.finish(path, {"elapsed_s": 0.0})
    return time.perf_counter() - t0


def load_in_this_process(paths: list[str]) -> dict:
    """Load caches whole; report seconds and the memory it took (run in a fresh process)."""
    proc = psutil.Process()
    before = proc.memory_info().rss
    loaded, secs = timed(lambda: [load_features(Path(p)) for p in paths])
    # Resident-memory growth, not peak RSS: a child's peak includes its parent's at fork.
    return {
        "seconds": secs,
        "rss_increase_mib": (proc.memory_info().rss - before) / 2**20,
        "array_mib": sum(f.nbytes + v.nbytes for f, v, _ in loaded) / 2**20,
    }


def cache_io(tmp: Path, n: int) -> dict:
    paths = {side: tmp / f"{side}-bench.h5" for side in DIMS}
    write_s = {side: synthetic_cache(paths[side], n, DIMS[side]) for side in DIMS}
    files = [str(p) for p in paths.values()]
    for p in paths.values():
        _evict(p)
    cold = in_subprocess("multirec.bench.features", "load", *files)
    warm = in_subprocess("multirec.bench.features", "load", *files)
    reader = FeatureReader(paths["visual"])
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, n, 1024) for _ in range(200)]
    _, secs = timed(lambda: [reader[b] for b in batches])
    return {
        "items": n,
        "dims": DIMS,
        "file_mib": {side: p.stat().st_size / 2**20 for side, p in paths.items()},
        "write_s": write_s,
        "load_whole_cold": cold,
        "load_whole_warm": warm,
        "random_batches_1024": {
            "batches": len(batches),
            "seconds": secs,
            "rows_per_s": len(batches) * 1024 / secs,
            "mib_per_s": len(batches) * 1024 * DIMS["visual"] * 2 / 2**20 / secs,
        },
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        print(json.dumps(load_in_this_process(sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument(
        "--items", type=int, default=PIXELREC50K_ITEMS, help="rows of the synthetic cache"
    )
    args = parser.parse_args()
    root = Path(os.environ.get("MULTIREC_ROOT", os.getcwd()))
    cfg = config(root)
    ds = ensure_prepared(cfg.data, cfg.paths, progress=False)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BENCH_DIR, prefix=".features-") as tmp:
        results = {
            "dataset": {"name": ds.manifest.get("name"), "items": ds.n_items},
            **{
                side: extraction(
                    ds, cfg.encoder[side], Path(tmp) / "cache", args.device, args.num_workers
                )
                for side in ("visual", "text")
            },
            "cache_io": cache_io(Path(tmp), args.items),
        }
    write("features", results)


if __name__ == "__main__":
    main()
