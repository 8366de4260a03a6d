"""``RecDataModule``: training pairs with fresh negatives every epoch.

Training batches carry only indices (users, positives, negatives); the model looks up
the in-memory item features itself, so the input pipeline costs almost nothing next
to the model's step. Negatives are drawn per epoch from a generator seeded with
(seed, epoch), so runs are reproducible and a resumed run draws what the original
would have.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch

from multirec.data.dataset import PreparedDataset
from multirec.data.negatives import NegativeSampler
from multirec.errors import ConfigError


def shard_bounds(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of process ``rank``'s batches over ``n`` shuffled rows.

    Every process shuffles the same way; global batch g is rows ``[g*batch_size*world, ...)``
    and each process takes its own contiguous share of it. So all processes take the same
    number of steps (DDP's gradient all-reduce hangs otherwise), and the averaged gradient
    is that of one process stepping over the whole global batch (``batch_size * world``)
    -- exactly when the shares are equal. A final global batch with fewer rows than
    processes would leave one empty and is dropped (< ``world`` rows an epoch, other rows
    each epoch); with one process nothing is dropped.
    """
    step = batch_size * world
    bounds = []
    for s in range(0, n, step):
        m = min(step, n - s)
        if m < world:
            break
        edges = s + np.arange(world + 1) * m // world
        bounds.append((int(edges[rank]), int(edges[rank + 1])))
    return bounds


class EpochBatches:
    """Shuffled (user, positive, negatives) batches; negatives resampled each epoch; under
    DDP each process yields its share of every global batch (:func:`shard_bounds`).

    Resumable mid-epoch (Lightning saves :meth:`state_dict` in checkpoints): a resumed run
    skips the batches of the interrupted epoch that were already trained on, so it sees
    exactly the batches the uninterrupted run would have.
    """

    def __init__(self, dm: RecDataModule) -> None:
        self.dm = dm
        self.epoch = -1
        self.taken = 0  # batches of `epoch` handed to the training loop
        self.resume: dict[str, int] | None = None

    def _bounds(self) -> list[tuple[int, int]]:
        trainer = self.dm.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return shard_bounds(len(self.dm.dataset.train), self.dm.batch_size, rank, world)

    def __len__(self) -> int:
        return len(self._bounds())

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "taken": self.taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume = dict(state)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        dm = self.dm
        epoch = dm.current_epoch()
        start = 0
        if self.resume is not None and self.resume["epoch"] == epoch:
            start = self.resume["taken"]
        self.resume = None
        self.epoch, self.taken = epoch, start
        train = dm.dataset.train
        neg = dm.sampler.sample(train.users, train.items, epoch=epoch)
        order = np.random.default_rng([dm.seed, epoch, 1]).permutation(len(train))
        users = torch.from_numpy(train.users[order])
        pos = torch.from_numpy(train.items[order])
        negs = torch.from_numpy(np.ascontiguousarray(neg[order]))
        for s, e in self._bounds()[start:]:
            self.taken += 1
            yield users[s:e], pos[s:e], negs[s:e]


MAX_NEGATIVES_BYTES = 2 << 30  # one epoch's drawn negatives held in memory at once


def check_batches(dataset: PreparedDataset, batch_size: int, num_negatives: int) -> None:
    """Refuse batch settings the data cannot serve, before any work starts."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"datamodule.batch_size must be a whole number >= 1, got {batch_size!r}")
    if not isinstance(num_negatives, int) or not 1 <= num_negatives < dataset.n_items:
        raise ConfigError(
            f"datamodule.num_negatives must be a whole number from 1 to {dataset.n_items - 1} "
            f"(the catalogue has {dataset.n_items} items), got {num_negatives!r}"
        )
    need = len(dataset.train) * num_negatives * 8
    if need > MAX_NEGATIVES_BYTES:
        raise ConfigError(
            f"datamodule.num_negatives={num_negatives} would hold {need / 2**30:.1f} GiB of "
            f"negatives per epoch ({len(dataset.train)} training positives); lower it"
        )


class RecDataModule(L.LightningDataModule):
    """Training batches only: evaluation runs over saved candidate lists in
    :class:`multirec.eval.callback.RankingEvaluation`, not over batches."""

    def __init__(
        self,
        dataset: PreparedDataset,
        batch_size: int = 512,
        num_negatives: int = 4,
        negatives: str = "uniform",
        seed: int = 0,
        item_features: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        check_batches(dataset, batch_size, num_negatives)
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.seed = seed
        self.sampler = NegativeSampler(
            dataset.interaction_matrix("train"),
            num_negatives,
            negatives,
            seed,
            item_features=item_features,
        )
        self.batches = EpochBatches(self)

    def current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> EpochBatches:
        return self.batches
