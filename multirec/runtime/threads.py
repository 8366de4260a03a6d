"""One thread policy for torch's intra-op threads, DataLoader workers and OpenMP waiting.

torch's default -- one OpenMP thread per core, each spinning while it waits for the
others -- breaks down on a machine shared with other work: a parallel region ends only
when its slowest thread does, and a thread whose core another process holds makes every
other thread of the region spin, burning the very core it needs. On the 2-core
development machine, training spent 88 % of its samples in libgomp that way, and
extraction ran DataLoader workers beside two spinning torch threads on two cores.

So OpenMP threads wait *passively* (they sleep, and a busy core costs its share instead
of a multiple), and the model's threads and the DataLoader workers are chosen together
from the cores this process may actually use (affinity mask and cgroup quota), so that
workers running beside the model never oversubscribe the machine. libgomp reads
``OMP_WAIT_POLICY`` once, when torch loads it: this module sets it at import, which is
why the entry points import :mod:`multirec.runtime` before anything that imports torch.
A value the user exported is kept.

Every choice can be overridden in config (``threads.torch``, ``threads.workers``; null
means chosen here) and is logged in one line at the start of each entry point.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multirec.errors import ConfigError
from multirec.runtime.devices import device_name

log = logging.getLogger(__name__)

WAIT_POLICY = "PASSIVE"


def _set_openmp_wait() -> str:
    """Ask libgomp to sleep while waiting, unless the user chose; the policy libgomp uses."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
        return os.environ["OMP_WAIT_POLICY"].upper()
    return os.environ.get("OMP_WAIT_POLICY", "spin (torch was loaded before multirec.runtime)")


OPENMP_WAIT = _set_openmp_wait()


def _cgroup_cpus() -> int | None:
    """Whole CPUs the cgroup quota allows (v2 ``cpu.max`` or v1 CFS files), None if unlimited."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
        else:
            quota, period = (p.read_text().strip() for p in v1)
    except (OSError, ValueError):
        return None
    if quota in ("max", "-1"):
        return None
    return max(1, int(quota) // int(period))


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota, shared
    with the other processes ``torchrun`` started beside it on this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    cores = min(cores, quota) if quota else cores
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@dataclass(frozen=True)
class ThreadPolicy:
    """How many threads the model and how many processes the input pipeline get.

    ``torch`` is the model's intra-op thread count while nothing runs beside it (training,
    evaluation); ``workers`` the DataLoader processes that decode covers or tokenise text
    during extraction. :meth:`torch_beside` gives the model's threads while workers run:
    a worker is busy only part of the time (decoding a 256-px cover costs about a tenth of
    encoding it), so each counts as half a core and the model keeps the rest.
    """

    cores: int
    torch: int
    workers: int
    torch_fixed: bool  # the user set threads.torch: it holds beside workers too
    openmp_wait: str = OPENMP_WAIT

    def torch_beside(self, workers: int) -> int:
        if self.torch_fixed or workers == 0:
            return self.torch
        return max(1, min(self.torch, self.cores - workers // 2))

    def describe(self) -> str:
        return (
            f"{self.cores} cores available; torch {self.torch} intra-op threads, "
            f"{self.torch_beside(self.workers)} beside {self.workers} DataLoader workers; "
            f"OpenMP waits {self.openmp_wait.lower()}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "cores": self.cores,
            "torch": self.torch,
            "workers": self.workers,
            "torch_beside_workers": self.torch_beside(self.workers),
            "openmp_wait": self.openmp_wait,
        }


def _count(value: Any, key: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be null (automatic) or an integer >= {minimum}")
    return value


def choose_policy(
    cores: int, torch: int | None = None, workers: int | None = None, device: str = "cpu"
) -> ThreadPolicy:
    """The policy for ``cores`` CPUs; ``torch`` / ``workers`` fix those counts (None: choose).

    On a CPU device the model does the heavy work, so it gets every core and one worker
    decodes ahead of it (none on a single core, where it could only take turns with the
    model). On a GPU the model barely needs the CPU, so workers get every core but the one
    the main process feeds the GPU from.
    """
    torch_n = _count(torch, "threads.torch", 1)
    workers_n = _count(workers, "threads.workers", 0)
    if workers_n is None:
        on_gpu = str(device).startswith("cuda")
        workers_n = max(cores - 1, 1) if on_gpu else min(1, cores - 1)
    return ThreadPolicy(
        cores=cores,
        torch=torch_n or cores,
        workers=workers_n,
        torch_fixed=torch_n is not None,
    )


_current: ThreadPolicy | None = None


def current_policy() -> ThreadPolicy:
    """The policy the entry point applied, else the automatic one for this machine."""
    return _current or choose_policy(available_cores())


def apply_thread_policy(threads: Any = None, device: str = "cpu") -> ThreadPolicy:
    """Choose the policy from the ``threads`` config node (``torch``, ``workers``), set
    torch's intra-op threads to it and log it; the rest of the process follows it."""
    import torch

    global _current
    threads = threads or {}
    _current = choose_policy(
        available_cores(), threads.get("torch"), threads.get("workers"), device_name(device)
    )
    torch.set_num_threads(_current.torch)
    log.info("threads: %s", _current.describe())
    return _current


@contextlib.contextmanager
def model_threads(workers: int) -> Iterator[int]:
    """Run the model with the intra-op threads the policy gives it beside ``workers``
    DataLoader workers; the previous count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    n = current_policy().torch_beside(workers)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
