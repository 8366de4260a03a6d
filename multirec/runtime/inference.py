"""A frozen encoder made fast to run over a whole catalogue, without changing what it computes.

Three things cost EfficientNet-Lite0 on a CPU about half its speed, none of them its
arithmetic:

* batch norm after every convolution, a separate pass over each activation: in eval mode
  it is an affine map per channel, so it is folded into the convolution's weights
  (:func:`fold_batchnorm`; outputs agree to float32 rounding, checked on a probe batch);
* NCHW tensors, which oneDNN's convolutions reorder on every call: the model and its
  batches run channels-last (:func:`inference_ready`, :func:`channels_last`);
* activations larger than glibc's mmap threshold (32 MiB at most), which are mapped
  fresh and zero-filled by the kernel page by page on every batch (a third of the time at
  batch 32): :func:`keep_freed_memory` lets freed blocks be reused while a loop runs.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# glibc mallopt parameters and their defaults
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEEP_BYTES = 1 << 30


def channels_last(x: Any) -> Any:
    """An image batch (4-d tensor) in channels-last layout; anything else unchanged."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _conv_bn_pairs(net: nn.Module, probe: Any) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, batch norm) pairs where the norm's input is exactly the conv's output.

    Found by running ``probe`` through ``net`` with hooks, so it works whatever the
    model's code looks like; a module called more than once is never paired.
    """
    if not any(isinstance(m, nn.Conv2d) for m in net.modules()):
        return []
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, inputs: tuple, output: Any) -> None:
        calls.append((module, inputs[0], output))

    hooks = [
        m.register_forward_hook(record)
        for m in net.modules()
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d)
    ]
    try:
        with torch.inference_mode():
            net(probe)
    finally:
        for h in hooks:
            h.remove()
    counts: dict[int, int] = {}
    for m, _, _ in calls:
        counts[id(m)] = counts.get(id(m), 0) + 1
    return [
        (conv, bn)
        for (conv, _, out), (bn, inp, _) in zip(calls, calls[1:], strict=False)
        if isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and inp is out
        and counts[id(conv)] == counts[id(bn)] == 1
        and _after_norm(bn) is not None
    ]


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What remains of a batch norm module once its affine map is folded away: nothing for
    a plain one, the dropout and activation of timm's ``BatchNormAct2d``; None when the
    module does something else too (it is then left alone)."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    children = dict(bn.named_children())
    if set(children) == {"drop", "act"}:
        return nn.Sequential(children["drop"], children["act"])
    return None


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shift = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter(shift, requires_grad=False)


def fold_batchnorm(net: nn.Module, probe: Any) -> nn.Module:
    """``net`` (in eval mode) with every conv -> batch norm pair folded into the conv.

    Returns a folded copy when its output on ``probe`` matches the original's to float32
    rounding, else ``net`` itself (and says so).
    """
    pairs = _conv_bn_pairs(net, probe)
    if not pairs:
        return net
    with torch.inference_mode():
        want = net(probe).float()
    memo: dict[int, Any] = {}
    folded = copy.deepcopy(net, memo)
    parents = {
        id(child): (parent, name)
        for parent in folded.modules()
        for name, child in parent.named_children()
    }
    for conv, bn in pairs:
        conv2, bn2 = memo[id(conv)], memo[id(bn)]
        _fold(conv2, bn2)
        parent, name = parents[id(bn2)]
        setattr(parent, name, _after_norm(bn2))
    with torch.inference_mode():
        got = folded(probe).float()
    if not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * float(want.abs().max().clamp_min(1))):
        log.warning(
            "folding batch norm changed %s's outputs; running it unfolded", type(net).__name__
        )
        return net
    return folded


def inference_ready(net: nn.Module, probe: Any, device: torch.device) -> nn.Module:
    """``net`` on ``device``, batch norm folded and, for image models, channels-last."""
    net = net.to(device)
    if device.type == "cpu":
        net = fold_batchnorm(net, channels_last(probe))
    if isinstance(probe, torch.Tensor) and probe.dim() == 4:
        net = net.to(memory_format=torch.channels_last)
    return net


def _mallopt() -> Any:
    """glibc's ``mallopt``, or None on other C libraries."""
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None).mallopt
    return None


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Let freed memory be reused instead of returned to the kernel while the block runs.

    Large blocks come from the heap instead of fresh mappings, and up to 1 GiB freed at
    its top stays there; glibc's defaults are restored afterwards (the heap is then
    trimmed at the next free). Does nothing on other C libraries.
    """
    mallopt = _mallopt()
    if mallopt is None:
        yield
        return
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    try:
        yield
    finally:
        mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
