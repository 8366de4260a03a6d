"""Data pipeline benchmark on the pixelrec50k sample (`python -m multirec.bench.data`).

Measures, each stage in a fresh process so peak RSS is its own: reading the CSVs,
cleaning, k-core filtering and splitting (no images); and cover validation
throughput (images/s) over the sample's covers (``covers=N`` of them, 0 skips).
No model runs here, so there is no FLOP limit to compare with; the load average is
recorded with the figures.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

from multirec.bench.common import bench_settings, in_subprocess, peak_rss_mib, timed, write
from multirec.data.config import DataConfig
from multirec.data.covers import check_covers
from multirec.data.kcore import kcore_mask
from multirec.data.pixelrec import PixelRecReader, read_interactions, read_items
from multirec.data.prepare import clean_interactions
from multirec.data.readers import RawData
from multirec.data.splits import split_labels

SAMPLE = Path("outputs/data/sample_pixelrec50k")


def tables(root: str) -> dict:
    """Read + clean + k-core + split without touching images; prints JSON."""
    cfg = DataConfig(name="bench", root=root)
    r = Path(root)
    reader = PixelRecReader()
    (inter, _), t_read_i = timed(lambda: read_interactions(r, reader.files, reader.columns))
    (items, _), t_read_it = timed(lambda: read_items(r, reader.files, reader.columns))
    raw = RawData(inter, items, {}, reader.columns.counts, reader.sources(r))
    clean, t_clean = timed(lambda: clean_interactions(raw, cfg, Counter()))
    u = clean["user_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    i = clean["item_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    (keep, rounds), t_kcore = timed(lambda: kcore_mask(u, i, cfg.kcore))
    ts = clean["timestamp"].to_numpy()
    _, t_split = timed(lambda: split_labels(u[keep], ts[keep], "random", [0.7, 0.15, 0.15], 42))
    return {
        "interactions": inter.height,
        "items": items.height,
        "kept_after_kcore": int(keep.sum()),
        "kcore_rounds": rounds,
        "read_interactions_s": t_read_i,
        "read_items_s": t_read_it,
        "clean_dedup_s": t_clean,
        "kcore_s": t_kcore,
        "split_s": t_split,
        "peak_rss_mib": peak_rss_mib(),
    }


def covers(root: str, limit: int) -> dict:
    paths = sorted(str(p) for p in (Path(root) / "covers").iterdir())[:limit]
    out = {}
    for workers in (1, 2):
        (status, counts), secs = timed(
            lambda w=workers: check_covers(paths, 32, 89_478_485, w, progress=False)
        )
        out[f"workers_{workers}"] = {
            "images": len(paths),
            "seconds": secs,
            "images_per_s": len(paths) / secs,
        }
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "tables":
        print(json.dumps(tables(sys.argv[2])))
        return
    args = bench_settings(
        sys.argv[1:], {"covers": (20_000, "covers to validate (0 skips)")}, __doc__
    )
    if not (SAMPLE / "interactions.csv").is_file():
        from multirec.data.synthetic import generate_sample

        generate_sample(SAMPLE, size="pixelrec50k", seed=0)
    results = {
        "dataset": str(SAMPLE),
        "tables": in_subprocess("multirec.bench.data", "tables", str(SAMPLE)),
    }
    if args.covers and (SAMPLE / "covers").is_dir():
        results["cover_validation"] = covers(str(SAMPLE), limit=args.covers)
    write("data", results)


if __name__ == "__main__":
    main()
