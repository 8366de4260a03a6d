"""``RecDataModule``: training pairs with fresh negatives every epoch, and evaluation.

Training batches carry only indices (users, positives, negatives); the model looks up
the in-memory item features itself, so the input pipeline costs almost nothing next
to the model's step. Negatives are drawn per epoch from a generator seeded with
(seed, epoch), so runs are reproducible and a resumed run draws what the original
would have. Validation and test score the saved candidate lists of the ``eval``
protocols through the same evaluator every baseline uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from multirec.data.dataset import PreparedDataset
from multirec.data.negatives import NegativeSampler
from multirec.errors import ConfigError
from multirec.eval.evaluator import EvalResult, evaluate, tag_features, write_results
from multirec.eval.protocols import Protocol
from multirec.models.base import Recommender


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


class EpochBatches(IterableDataset):
    """Shuffled (user, positive, negatives) batches; negatives resampled each epoch; under
    DDP each process yields its share of every global batch (:func:`shard_bounds`)."""

    def __init__(self, dm: RecDataModule) -> None:
        self.dm = dm

    def _bounds(self) -> list[tuple[int, int]]:
        trainer = self.dm.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return shard_bounds(len(self.dm.dataset.train), self.dm.batch_size, rank, world)

    def __len__(self) -> int:
        return len(self._bounds())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        dm = self.dm
        epoch = dm.current_epoch()
        train = dm.dataset.train
        neg = dm.sampler.sample(train.users, train.items, epoch=epoch)
        order = np.random.default_rng([dm.seed, epoch, 1]).permutation(len(train))
        users = torch.from_numpy(train.users[order])
        pos = torch.from_numpy(train.items[order])
        negs = torch.from_numpy(np.ascontiguousarray(neg[order]))
        for s, e in self._bounds():
            yield users[s:e], pos[s:e], negs[s:e]


class RecDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset: PreparedDataset,
        protocols: dict[str, Protocol] | None = None,
        valid_protocol: str = "sampled",
        batch_size: int = 512,
        num_negatives: int = 4,
        negatives: str = "uniform",
        seed: int = 0,
        item_features: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.protocols = protocols or {}
        if self.protocols and valid_protocol not in self.protocols:
            raise ConfigError(
                f"valid_protocol={valid_protocol!r} is not among protocols {sorted(self.protocols)}"
            )
        self.valid_protocol = valid_protocol
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
        self.results: dict[str, list[EvalResult]] = {}

    def current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return DataLoader(EpochBatches(self), batch_size=None)

    def _one_step(self) -> DataLoader:
        # Evaluation runs over saved candidate lists in the model's epoch-end hook; the
        # loop needs a loader to fire those hooks, so it gets a single empty step.
        return DataLoader([torch.zeros(1)], batch_size=None)

    val_dataloader = _one_step
    test_dataloader = _one_step

    def evaluate(self, model: Recommender, split: str, keep: bool = True) -> dict[str, float]:
        """Metrics of ``model`` on ``split``: validation under ``valid_protocol`` only (it
        runs every epoch), test under every protocol. ``keep`` stores the results for
        :meth:`save_results` (the trained model's; baselines compared with it pass False)."""
        names = [self.valid_protocol] if split == "valid" else list(self.protocols)
        results = [
            evaluate(
                model,
                self.dataset,
                self.protocols[n],
                split,
                item_features=tag_features(self.dataset),
            )
            for n in names
        ]
        if keep:
            self.results[split] = results
        return {k: v for r in results for k, v in r.metrics.items()}

    def save_results(self, out_dir: Path, provenance: dict) -> dict[str, float]:
        """Write the last test results (metrics.json, per-list parquet, evaluation.json)."""
        return write_results(self.results.get("test", []), out_dir, provenance)
