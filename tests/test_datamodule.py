"""Training batches: every positive once per epoch, negatives fresh each epoch and never
a training positive, reproducible from the seed."""

from __future__ import annotations

import numpy as np
import torch

from multirec.data.datamodule import RecDataModule


class FakeTrainer:
    current_epoch = 0
    global_rank = 0
    world_size = 1


def epoch_batches(ds, epoch: int, seed: int = 0):
    dm = RecDataModule(ds, batch_size=64, num_negatives=3, seed=seed)
    dm.trainer = FakeTrainer()
    dm.trainer.current_epoch = epoch
    batches = list(dm.train_dataloader())
    return [torch.cat(x) for x in zip(*batches, strict=True)]


def test_each_positive_once_with_negatives_outside_training(tiny_prepared):
    users, pos, neg = epoch_batches(tiny_prepared, 0)
    train = tiny_prepared.train
    got = sorted(zip(users.tolist(), pos.tolist(), strict=True))
    assert got == sorted(zip(train.users.tolist(), train.items.tolist(), strict=True))
    m = tiny_prepared.interaction_matrix("train").toarray().astype(bool)
    assert neg.shape == (len(train), 3)
    assert not m[users.numpy()[:, None], neg.numpy()].any()


def test_negatives_resampled_each_epoch_and_seeded(tiny_prepared):
    a0 = epoch_batches(tiny_prepared, 0)
    a0_again = epoch_batches(tiny_prepared, 0)
    a1 = epoch_batches(tiny_prepared, 1)
    other_seed = epoch_batches(tiny_prepared, 0, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a0, a0_again, strict=True))
    assert not torch.equal(a0[2], a1[2])
    assert not torch.equal(a0[2], other_seed[2])
    assert np.mean((a0[2] != a1[2]).numpy()) > 0.5
