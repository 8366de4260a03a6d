"""RowAdamW: lazy row updates for sparse embedding gradients, AdamW for the rest."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from multirec.models.optim import RowAdamW


def pair(seed: int = 0) -> tuple[nn.Embedding, nn.Linear]:
    torch.manual_seed(seed)
    return nn.Embedding(10, 4, sparse=True), nn.Linear(4, 1)


def run(opt: torch.optim.Optimizer, emb: nn.Embedding, head: nn.Linear, batches) -> None:
    for rows in batches:
        opt.zero_grad()
        head(emb(torch.tensor(rows))).pow(2).sum().backward()
        opt.step()


def optimiser(emb: nn.Embedding, head: nn.Linear, **kw) -> RowAdamW:
    return RowAdamW(
        [{"params": emb.parameters(), "rows": True}, {"params": head.parameters()}], **kw
    )


def dense_twin(emb: nn.Embedding) -> nn.Embedding:
    twin = nn.Embedding(10, 4)
    twin.weight.data.copy_(emb.weight.data)
    return twin


@pytest.mark.parametrize("decay", [0.0, 0.1])
@pytest.mark.parametrize("fused", [None, True])
def test_rows_touched_every_step_move_exactly_as_under_adamw(decay, fused):
    emb, head = pair()
    twin, twin_head = dense_twin(emb), nn.Linear(4, 1)
    twin_head.load_state_dict(head.state_dict())
    batches = [[1, 3, 3], [3, 1], [1, 3, 1]]
    run(
        optimiser(
            emb,
            head,
            lr=0.1,
            weight_decay=decay,
            fused=fused,
        ),
        emb,
        head,
        batches,
    )
    run(
        torch.optim.AdamW(
            [*twin.parameters(), *twin_head.parameters()], lr=0.1, weight_decay=decay
        ),
        twin,
        twin_head,
        batches,
    )
    touched = [1, 3]
    torch.testing.assert_close(emb.weight[touched], twin.weight[touched])
    torch.testing.assert_close(head.weight, twin_head.weight)


def test_untouched_rows_keep_their_values_and_moments():
    emb, head = pair()
    before = emb.weight.detach().clone()
    opt = optimiser(emb, head, lr=0.1)
    run(opt, emb, head, [[1, 2], [5]])
    untouched = [0, 3, 4, 6, 7, 8, 9]
    assert torch.equal(emb.weight[untouched], before[untouched])
    assert not torch.equal(emb.weight[[1, 2, 5]], before[[1, 2, 5]])
    state = opt.state[emb.weight]
    assert state["exp_avg"][untouched].abs().sum() == 0 and state["step"] == 2


def test_a_resumed_optimiser_continues_as_the_uninterrupted_one():
    emb, head = pair()
    opt = optimiser(emb, head, lr=0.05)
    run(opt, emb, head, [[1, 2], [2, 7]])
    # deep copies: a state dict holds the live tensors, which the next steps update in place
    saved = copy.deepcopy((emb.state_dict(), head.state_dict(), opt.state_dict()))
    run(opt, emb, head, [[7, 8], [1, 8]])

    emb2, head2 = pair(1)
    emb2.load_state_dict(saved[0])
    head2.load_state_dict(saved[1])
    opt2 = optimiser(emb2, head2, lr=0.05)
    opt2.load_state_dict(saved[2])
    run(opt2, emb2, head2, [[7, 8], [1, 8]])
    torch.testing.assert_close(emb2.weight, emb.weight)
    torch.testing.assert_close(head2.weight, head.weight)


def test_dense_gradients_update_the_same_rows_as_sparse_ones():
    """Under DDP the tables' gradients are dense: training must not depend on it."""
    emb, head = pair()
    twin, twin_head = dense_twin(emb), nn.Linear(4, 1)
    twin_head.load_state_dict(head.state_dict())
    batches = [[1, 2], [5, 2], [1, 1, 9]]
    run(optimiser(emb, head, lr=0.1, weight_decay=0.1), emb, head, batches)
    run(optimiser(twin, twin_head, lr=0.1, weight_decay=0.1), twin, twin_head, batches)
    torch.testing.assert_close(twin.weight, emb.weight)


def test_a_row_whose_gradient_is_zero_does_not_move():
    emb, head = pair()
    opt = optimiser(emb, head, lr=0.1)
    run(opt, emb, head, [[3]])
    moved = emb.weight[3].detach().clone()
    opt.zero_grad()
    # row 3 is looked up but its output is multiplied by zero; row 4 gets a real gradient
    (head(emb(torch.tensor([3]))) * 0 + head(emb(torch.tensor([4])))).pow(2).sum().backward()
    opt.step()
    assert torch.equal(emb.weight[3], moved)
