"""One device setting for every entry point: ``device=cpu|cuda|cuda:N|auto``.

It says where features are extracted and checkpoints run, and, through the resolvers
:mod:`multirec.cli` registers for ``conf/trainer``, which accelerator, devices and precision
Lightning trains with, so a GPU run is ``device=cuda`` and nothing else.

torch is imported inside the functions: this package is loaded before torch on purpose
(see :mod:`multirec.runtime.threads`).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from multirec.errors import ConfigError

_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")
# the precision a frozen encoder computes in (encoder.*.precision)
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def device_name(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values are checked."""
    import torch

    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not _DEVICE.match(device):
        raise ConfigError(f"device={device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if device != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA GPU is visible; use device=cpu")
    return device


def trainer_accelerator(device: str) -> str:
    """Lightning's ``accelerator`` for ``device``."""
    return "cpu" if device_name(device) == "cpu" else "gpu"


def trainer_devices(device: str) -> int | list[int]:
    """Lightning's ``devices``: the GPU ``cuda:N`` names, else one device."""
    name = device_name(device)
    return [int(name.split(":")[1])] if ":" in name else 1


def trainer_precision(device: str) -> str:
    """Full precision on the CPU; mixed on a GPU, in bfloat16 where the GPU has it."""
    import torch

    if device_name(device) == "cpu":
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


@cache
def cpu_multiplies_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): only there
    does bfloat16 beat float32; elsewhere oneDNN emulates it, more slowly."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", info) is not None


def inference_precision(precision: str, device_type: str) -> str:
    """The dtype a frozen encoder computes in on ``device_type`` (``cpu`` or ``cuda``).

    ``auto`` is the fastest one the hardware does natively: bfloat16 on a GPU or CPU that
    has it (on the two-core AVX512-BF16 development machine, 1.4x float32's extraction rate
    on covers and 1.55x on texts, at a cosine of 0.9999 to float32 features, which are
    stored in float16 anyway), float16 on older GPUs, else float32.
    """
    if precision != "auto":
        return precision
    if device_type == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_multiplies_bfloat16() else "float32"
