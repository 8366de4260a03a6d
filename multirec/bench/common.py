"""Shared benchmark plumbing: timing, peak memory, machine load, the matmul limit, JSON output.

Benchmarks run on machines shared with other work, so every figure is reported with the
load average it ran under and the thread settings it used, and speed is stated as a
ratio to a limit measured in the same process, under the same load and threads: the
throughput of a plain matrix product in the precision the work computes in
(:func:`matmul_gflops`) divided by the FLOPs one unit of work costs (:func:`count_flops`).

torch is imported only where it is used, so that the data benchmark's peak memory is its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from multirec.io import atomic_write_json
from multirec.runtime import available_cores, current_policy

BENCH_DIR = Path("outputs/bench")
MATMUL_N = 1024  # square product: large enough to run near the cores' peak


def bench_settings(
    argv: list[str], keys: dict[str, tuple[Any, str]], usage: str | None
) -> SimpleNamespace:
    """A benchmark's settings from Hydra-style ``key=value`` arguments, like every entry point.

    ``keys`` maps each key to (default, what it means); lists are written ``key=[a,b]``.
    ``--help`` prints ``usage`` and the keys and exits before any work starts; an unknown
    key or a value of the wrong type is one line on stderr and exit status 2.
    """
    if {"-h", "--help"} & set(argv):
        print((usage or "").strip())
        print("\nsettings (key=value, Hydra style):")
        for key, (default, meaning) in keys.items():
            shown = json.dumps(default).replace(" ", "").replace('"', "")
            print(f"  {key}={shown:<18} {meaning}")
        sys.exit(0)
    try:
        bad = next((a for a in argv if "=" not in a), None)
        if bad is not None:
            raise ValueError(f"{bad!r} is not key=value")
        base = OmegaConf.create({k: default for k, (default, _) in keys.items()})
        OmegaConf.set_struct(base, True)
        values = OmegaConf.to_container(OmegaConf.merge(base, OmegaConf.from_dotlist(argv)))
        for key, (default, _) in keys.items():
            if type(values[key]) is not type(default):
                raise ValueError(f"{key}={values[key]!r} must be a {type(default).__name__}")
    except (OmegaConfBaseException, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}; see --help", file=sys.stderr)
        sys.exit(2)
    return SimpleNamespace(**values)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def load() -> list[float]:
    """1-, 5- and 15-minute load averages of the machine."""
    return [round(x, 2) for x in os.getloadavg()]


def matmul_gflops(seconds: float = 1.0, n: int = MATMUL_N, dtype: str = "float32") -> float:
    """GFLOP/s of an ``n`` x ``n`` matrix product in ``dtype`` on torch's current threads."""
    import torch

    a, b = (torch.randn(n, n, dtype=getattr(torch, dtype)) for _ in range(2))
    a @ b
    reps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / elapsed / 1e9


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs torch counts for ``fn()`` (matrix products and convolutions; a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def busy_core(on: bool = True) -> Iterator[None]:
    """Another process keeping one core busy (a Python busy loop) while the block runs."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let the scheduler see it
        yield
    finally:
        proc.kill()
        proc.wait()


def in_subprocess(module: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``python -m module args`` and parse the JSON it prints last (fresh peak RSS).

    ``env`` replaces the environment (libgomp reads OpenMP's settings only at start-up).
    """
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def openmp_env(wait: str | None) -> dict[str, str]:
    """This environment with ``OMP_WAIT_POLICY=wait``, or without it (libgomp's default)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if wait:
        env["OMP_WAIT_POLICY"] = wait
    return env


def write(name: str, results: dict) -> Path:
    """Write ``results`` with the machine, this process's threads and the load at the end."""
    torch = sys.modules.get("torch")  # not imported for it: the data benchmark measures without
    path = BENCH_DIR / f"{name}.json"
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": available_cores(),
            "torch": torch.__version__ if torch else None,
        },
        "conditions": {
            "load_at_end": load(),
            "threads": {
                **current_policy().as_dict(),
                "torch": torch.get_num_threads() if torch else None,
            },
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        },
        **results,
    }
    atomic_write_json(path, results)
    print(json.dumps(results, indent=2))
    print(f"written: {path}")
    return path
