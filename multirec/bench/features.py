"""Feature extraction against what the machine can do (`python -m multirec.bench.features`).

1. Extraction with ``effnet_sbert`` (EfficientNet-Lite0 on covers, MiniLM on texts) of the
   first ``items`` items of the pixelrec50k-size sample, with covers drawn as
   ``cover_px`` JPEGs: the end-to-end rate (DataLoader workers decoding or tokenising,
   the model, HDF5 writes) against the limit implied by the model's FLOPs per item
   (counted with ``FlopCounterMode`` on the real inputs) and the matmul throughput of all
   cores in the precision the encoder computes in, measured in the same process before
   and after. The rate is extrapolated to the whole pixelrec50k catalogue (82,865 items).
   Each precision of ``precisions`` runs: ``auto`` is the encoders' default (bfloat16
   where the CPU multiplies it natively), ``float32`` the exact one.
   Each thread configuration (``configs``) runs in a fresh process, since OpenMP reads
   its settings at start-up: ``policy`` is multirec's thread policy, ``default`` torch's
   defaults before it (OpenMP threads spin while waiting, one per core, 2 workers);
   ``passive-t1-w1`` and the like fix the wait policy, torch threads and workers. Each
   runs on the machine as it is and, with ``busy=[0,1]``, beside one more process
   keeping a core busy.
2. A pixelrec50k-size cache (83,000 items, 1280 + 384 dims, float16): write time, time
   and memory to load it whole (in a fresh process, page cache cold and warm), and
   random-batch read throughput through the lazy reader, as training reads it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import psutil
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from multirec.bench.common import (
    BENCH_DIR,
    bench_settings,
    busy_core,
    count_flops,
    cpu_seconds,
    in_subprocess,
    load,
    matmul_gflops,
    openmp_env,
    timed,
    write,
)
from multirec.bench.training import SAMPLE, sample_tables
from multirec.data.config import DataConfig
from multirec.data.dataset import PreparedDataset
from multirec.data.prepare import prepare
from multirec.data.synthetic import streams
from multirec.data.synthetic.cover_art import draw_cover, topic_styles
from multirec.features.batching import item_loader
from multirec.features.cache import OK, FeatureReader, ShardWriter, load_features
from multirec.features.distributed import chunk_ranges
from multirec.features.extraction import DEFAULT_CHUNK_ROWS, ensure_cache, instantiate_encoder
from multirec.runtime import apply_thread_policy, available_cores

CONF = Path(__file__).resolve().parents[2] / "conf"
PIXELREC50K_ITEMS = 82_865
DIMS = {"visual": 1280, "text": 384}


def encoder_config() -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="extract", overrides=["encoder=effnet_sbert"])
    return cfg.encoder


def subset(n_items: int, cover_px: int) -> PreparedDataset:
    """The first ``n_items`` items of the pixelrec50k-size sample, their interactions, and
    covers drawn at ``cover_px`` pixels as JPEG (quality 90), prepared once."""
    raw = BENCH_DIR / "data" / f"pixelrec50k-first{n_items}-{cover_px}px"
    if not (raw / "interactions.csv").is_file():
        sample_tables()
        items = pl.read_csv(SAMPLE / "item_info.csv").head(n_items)
        keep = set(items["item_id"].to_list())
        inter = pl.read_csv(SAMPLE / "interactions.csv").filter(pl.col("item_id").is_in(keep))
        (raw / "covers").mkdir(parents=True, exist_ok=True)
        styles = topic_styles(streams.stream(0, streams.STYLES), 24)
        for k, item in enumerate(items["item_id"].to_list()):
            rng = streams.stream(0, streams.COVERS, k)
            pixels = draw_cover(styles, k % 24, cover_px, rng)
            Image.fromarray(pixels).save(raw / "covers" / f"{item}.jpg", quality=90)
        items.write_csv(raw / "item_info.csv")
        inter.write_csv(raw / "interactions.csv")
    cfg = DataConfig(name=f"bench-extract-{n_items}", root=str(raw), kcore=1)
    cfg.covers.policy = "keep"
    return prepare(cfg, Path("outputs/prepared"), progress=False)


def flops_per_item(enc_cfg: DictConfig, ds: PreparedDataset) -> float:
    """Model FLOPs per valid item: of one probe image, or over every text batch of the run
    (text costs depend on the lengths; padding included, as the model computes it)."""
    encoder = instantiate_encoder(enc_cfg)
    pre = encoder.preprocessing()
    net = encoder.network()
    if encoder.modality == "visual":
        x = pre.collate([pre.probe])
        with torch.inference_mode():
            return float(count_flops(lambda: net(x)))
    chunks = chunk_ranges(ds.n_items, DEFAULT_CHUNK_ROWS)
    flops, items = 0, 0
    with torch.inference_mode():
        for _, _, x in item_loader(encoder, pre, ds, chunks, torch.device("cpu"), 0):
            if x is not None:
                flops += count_flops(lambda x=x: net(x))
                items += len(x["input_ids"])
    return flops / max(items, 1)


class _Phases(logging.Handler):
    """When extraction's forward loop starts (its pre-start estimate is logged, with the
    model-alone rate) and when the cache is written."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.loop_start = self.end = self.model_alone = None

    def emit(self, record: logging.LogRecord) -> None:
        if "the model alone runs" in record.msg:
            self.loop_start, self.model_alone = record.created, float(record.args[3])
        elif record.msg.startswith("feature cache written"):
            self.end = record.created


def parse_config(name: str, cores: int) -> dict:
    """``policy``, ``default`` or ``<wait>-t<torch>-w<workers>`` -> environment and threads."""
    if name == "policy":
        return {"wait": "PASSIVE", "torch": None, "workers": None}
    if name == "default":
        return {"wait": None, "torch": cores, "workers": 2}
    wait, t, w = name.split("-")
    return {
        "wait": None if wait == "spin" else wait.upper(),
        "torch": int(t[1:]),
        "workers": int(w[1:]),
    }


def extract_once(spec: dict) -> dict:
    """One thread configuration, in this (fresh) process: every side of the encoder pair."""
    policy = apply_thread_policy({"torch": spec["torch"], "workers": spec["workers"]})
    ds = PreparedDataset.load(spec["dataset"])
    enc = OmegaConf.create(spec["encoder"])
    out = {"threads": {**policy.as_dict(), "openmp_wait": os.environ.get("OMP_WAIT_POLICY")}}
    logger = logging.getLogger("multirec.features.extraction")
    logger.setLevel(logging.INFO)
    for side in ("visual", "text"):
        enc[side].precision = spec["precision"]
        dtype = instantiate_encoder(enc[side]).compute_precision(torch.device("cpu"))
        phases = _Phases()
        logger.addHandler(phases)
        with busy_core(spec["busy"]):
            torch.set_num_threads(policy.cores)
            load_before, mm_before = load(), matmul_gflops(dtype=dtype)
            cpu0 = cpu_seconds()
            path, wall = timed(
                lambda side=side: ensure_cache(
                    ds,
                    enc[side],
                    Path(spec["cache"]) / side,
                    num_workers=policy.workers,
                    progress=False,
                )
            )
            cpu = cpu_seconds() - cpu0
            torch.set_num_threads(policy.cores)
            mm_after, load_after = matmul_gflops(dtype=dtype), load()
        logger.removeHandler(phases)
        _, valid, attrs = load_features(path)
        n_valid = int(valid.sum())
        loop_s = phases.end - phases.loop_start
        steady = n_valid / loop_s
        setup_s = attrs["elapsed_s"] - loop_s
        limit = (mm_before + mm_after) / 2 * 1e9 / spec["flops"][side]
        out[side] = {
            "items": ds.n_items,
            "valid_items": n_valid,
            "seconds": attrs["elapsed_s"],
            "setup_s": setup_s,
            "loop_s": loop_s,
            "wall_with_model_loading_s": wall,
            "cpu_seconds": cpu,
            "items_per_s": steady,
            "items_per_s_with_setup": n_valid / attrs["elapsed_s"],
            "items_per_cpu_s": n_valid / cpu,
            "model_alone_items_per_s": phases.model_alone,
            "precision": dtype,
            "gflop_per_item": spec["flops"][side] / 1e9,
            "matmul_gflops_all_cores": [mm_before, mm_after],
            "limit_items_per_s": limit,
            "ratio_to_limit": steady / limit,
            "catalogue_minutes": (setup_s + PIXELREC50K_ITEMS / steady) / 60,
            "load": {"before": load_before, "after": load_after},
        }
    return out


def extraction(args: SimpleNamespace, tmp: Path) -> dict:
    ds = subset(args.items, args.cover_px)
    enc = encoder_config()
    flops = {side: flops_per_item(enc[side], ds) for side in ("visual", "text")}
    cores = available_cores()
    runs = {}
    for busy, name, precision in itertools.product(args.busy, args.configs, args.precisions):
        cfg = parse_config(name, cores)
        spec = {
            **cfg,
            "busy": busy,
            "precision": precision,
            "dataset": str(ds.root),
            "encoder": OmegaConf.to_container(enc, resolve=True),
            "cache": str(tmp / f"{name}-{precision}-busy{busy}"),
            "flops": flops,
        }
        key = f"{name} {precision}{' + busy core' if busy else ''}"
        runs[key] = in_subprocess(
            "multirec.bench.features", "extract", json.dumps(spec), env=openmp_env(cfg["wait"])
        )
        print(key, json.dumps(runs[key]), file=sys.stderr)
    return {
        "dataset": {"items": ds.n_items, "cover_px": args.cover_px, "root": str(ds.root)},
        "extrapolated_to": f"pixelrec50k catalogue, {PIXELREC50K_ITEMS} items",
        "runs": runs,
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
        "load": load(),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        print(json.dumps(load_in_this_process(sys.argv[2:])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "extract":
        print(json.dumps(extract_once(json.loads(sys.argv[2]))))
        return
    keys = {
        "items": (512, "items of the subset"),
        "cover_px": (256, "cover side in pixels"),
        "configs": (["policy", "default"], "thread configurations"),
        "precisions": (["auto", "float32"], "the encoders' compute precisions"),
        "busy": ([0, 1], "0: the machine as it is, 1: one more core kept busy"),
        "cache_items": (83_000, "rows of the synthetic cache; 0 skips it"),
    }
    args = bench_settings(sys.argv[1:], keys, __doc__)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BENCH_DIR, prefix=".features-") as tmp:
        results = {"extraction": extraction(args, Path(tmp))}
        if args.cache_items:
            results["cache_io"] = cache_io(Path(tmp), args.cache_items)
    write("features", results)


if __name__ == "__main__":
    main()
