"""Shared benchmark plumbing: timing, peak memory, JSON output."""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multirec.io import atomic_write_json

BENCH_DIR = Path("outputs/bench")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_subprocess(module: str, *args: str) -> dict:
    """Run ``python -m module args`` and parse the JSON it prints last (fresh peak RSS)."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(name: str, results: dict) -> Path:
    path = BENCH_DIR / f"{name}.json"
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
        **results,
    }
    atomic_write_json(path, results)
    print(json.dumps(results, indent=2))
    print(f"written: {path}")
    return path
