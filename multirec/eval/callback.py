"""``RankingEvaluation``: the Lightning callback that evaluates a neural model during training.

At the end of every training epoch it scores the saved candidate lists of the validation
protocol through the evaluator every baseline uses and logs the metrics, which model
checkpointing and early stopping then monitor. :meth:`RankingEvaluation.test` scores the
final model under every protocol, logs the test metrics and writes the result files. The
data module only serves training batches and the model only scores, so no validation or
test data loader exists: evaluation is over saved lists, not batches.

It must come before the checkpoint and early-stopping callbacks in the trainer's list, so
that the metrics they monitor are logged first (Lightning runs checkpointing last anyway).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError
from multirec.eval.evaluator import EvalResult, evaluate, write_lists, write_results
from multirec.eval.protocols import Protocol
from multirec.eval.registry import MetricSet
from multirec.models.base import Recommender


class RankingEvaluation(L.Callback):
    def __init__(
        self,
        dataset: PreparedDataset,
        protocols: dict[str, Protocol],
        metrics: MetricSet,
        valid_protocol: str = "sampled",
    ) -> None:
        if valid_protocol not in protocols:
            raise ConfigError(
                f"valid_protocol={valid_protocol!r} is not among protocols {sorted(protocols)}"
            )
        self.dataset = dataset
        self.protocols = protocols
        self.metrics = metrics
        self.valid_protocol = valid_protocol

    def evaluate(
        self, model: Recommender, split: str, show_progress: bool = True
    ) -> list[EvalResult]:
        """``model`` on ``split``: validation under ``valid_protocol`` only (it runs every
        epoch), test under every protocol; ``show_progress``: bars on the long ones."""
        names = [self.valid_protocol] if split == "valid" else list(self.protocols)
        return [
            evaluate(
                model,
                self.dataset,
                self.protocols[n],
                split,
                metrics=self.metrics,
                show_progress=show_progress,
            )
            for n in names
        ]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # every rank evaluates: one progress bar is enough
        valid = self.evaluate(pl_module, "valid", show_progress=trainer.is_global_zero)
        metrics = {k: v for r in valid for k, v in r.metrics.items()}
        # every rank evaluates the same lists: sync_dist only averages identical values
        pl_module.log_dict(metrics, sync_dist=True)

    def test(
        self, trainer: L.Trainer, model: Recommender, out_dir: Path, provenance: dict[str, Any]
    ) -> dict[str, float]:
        """Score ``model`` on the test lists of every protocol, log the metrics to the
        trainer's loggers and write ``metrics.json``, ``evaluation.json`` and per-list files."""
        merged = write_results(self.evaluate(model, "test"), out_dir, provenance)
        for logger in trainer.loggers:
            logger.log_metrics(merged, step=trainer.global_step)
        return merged

    def compare(self, model: Recommender, out_dir: Path) -> dict[str, float]:
        """Test metrics of another model (a baseline) on the same lists; its per-list results
        go to ``out_dir`` (``compare/<name>/`` of the run), for the report's paired tests."""
        results = self.evaluate(model, "test")
        write_lists(results, out_dir)
        return {k: v for r in results for k, v in r.metrics.items()}
