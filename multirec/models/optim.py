"""AdamW that updates only the embedding rows a batch touched.

The id embeddings are most of a recommender's parameters (8.5 M of 9 M at PixelRec50K
scale), and a batch touches a few thousand of their 133,000 rows. Dense AdamW reads and
writes every row, its moments and its gradient at every step, so its cost grows with the
catalogue: fused, on two idle cores, about 5 ms for PixelRec50K's tables and 27 ms for
tables ten times larger, where updating a batch's 8,000 touched rows costs 8 ms either way
(``python -m multirec.bench.training``). Embeddings built with ``sparse=True`` give sparse
gradients, and :class:`RowAdamW` updates just the rows whose gradient is not zero (lazy
Adam, as torch's ``SparseAdam`` and TensorFlow's ``LazyAdam``: an untouched row keeps its
value and moments, where dense Adam would move it by its momentum). Dense gradients take
AdamW's own (fused) path. The state has AdamW's keys and layout, so checkpoints save and
resume it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class RowAdamW(torch.optim.AdamW):
    """:class:`torch.optim.AdamW` with lazy row updates for the parameter groups marked
    ``rows=True`` (embedding tables).

    A row moves when its gradient is not zero. Its gradient may come sparse (an embedding
    with ``sparse=True``) or dense (under DDP, which all-reduces dense gradients): the
    update is the same, so one process and several train the same model.
    """

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group.get("rows") and (group["amsgrad"] or group["maximize"]):
            raise ValueError("RowAdamW's row updates support neither amsgrad nor maximize")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rowwise = [
            (p, group)
            for group in self.param_groups
            if group.get("rows")
            for p in group["params"]
            if p.grad is not None
        ]
        grads = [p.grad for p, _ in rowwise]
        for p, _ in rowwise:
            p.grad = None  # AdamW's own step skips these parameters
        super().step()
        for (p, group), grad in zip(rowwise, grads, strict=True):
            self._update_rows(p, *_touched(grad), group)
            p.grad = grad
        return loss

    def _update_rows(
        self, p: torch.Tensor, rows: torch.Tensor, g: torch.Tensor, group: dict
    ) -> None:
        state = self.state[p]
        if not state:  # AdamW's layout (the fused path keeps a float32 step tensor)
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        m = state["exp_avg"][rows].mul_(beta1).add_(g, alpha=1 - beta1)
        v = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        w = p[rows]
        if decay:
            w.mul_(1 - lr * decay)
        denom = v.sqrt().div_(math.sqrt(1 - beta2**step)).add_(eps)
        w.addcdiv_(m, denom, value=-lr / (1 - beta1**step))
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        p.index_copy_(0, rows, w)


def _touched(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of a 2-D gradient that are not zero, and their values."""
    if grad.is_sparse:
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
    else:
        rows = torch.arange(len(grad), device=grad.device)
        values = grad
    keep = values.ne(0).any(dim=1)
    return rows[keep], values[keep]
