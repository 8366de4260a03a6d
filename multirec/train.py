"""``python -m multirec.train encoder=clip_sbert fusion=attention [key=value ...]``

Shaped like the lightning-hydra-template's train: seed everything, build the data
(preparing and extracting whatever is missing), model, callbacks, loggers and trainer
from config, fit with early stopping on validation NDCG@10, test the best checkpoint,
write ``metrics.json`` into the run directory and return the metric a sweeper optimises.
"""

from __future__ import annotations

# first: it sets OpenMP's environment, which torch reads once when the imports below load it
from multirec.runtime import apply_thread_policy

# isort: split
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from multirec.cli import in_sweep, print_config_tree, user_errors
from multirec.config import build
from multirec.data.datamodule import shard_bounds
from multirec.errors import ConfigError
from multirec.eval.callback import RankingEvaluation
from multirec.eval.table import format_tables
from multirec.io import atomic_write_json
from multirec.models.neural import build_model, dataset_sizes
from multirec.pipeline.checkpoints import check_resume, read_weights
from multirec.pipeline.estimates import check_step_times
from multirec.pipeline.resume import run_dir_of
from multirec.pipeline.settings import check_settings
from multirec.pipeline.stages import build_item_inputs, ensure_prepared
from multirec.reporting.runs import COMPARE_DIR, safe_name
from multirec.tracking import (
    MULTIREC_MODEL,
    choices,
    describe,
    log_files,
    one_run_per_job,
    run_config,
)

log = logging.getLogger(__name__)


def check_launch(cfg: DictConfig) -> None:
    """Refuse DDP whose processes Lightning would start inside a local sweep.

    Lightning starts DDP's other processes by re-running the command line, and in a
    multirun each of them would re-run the whole sweep. Processes that SLURM
    (``hydra/launcher=slurm``) or torchrun start are fine.
    """
    if (
        not str(cfg.trainer.get("strategy", "")).startswith("ddp")
        or HydraConfig.get().mode != RunMode.MULTIRUN
    ):
        return
    if not (SLURMEnvironment.detect() or TorchElasticEnvironment.detect()):
        raise ConfigError(
            "trainer=ddp in a local sweep (-m) would re-run the sweep in every process: run the "
            "configurations one at a time, or sweep with hydra/launcher=slurm (docs/cluster.md)"
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration; returns the run's provenance and metrics."""
    check_settings(cfg)
    if cfg.ckpt_path and (previous := run_dir_of(cfg.ckpt_path)) is not None:
        with open_dict(cfg):  # a resumed run continues in its own directory
            cfg.paths.output_dir = str(previous)
        log.info("resuming %s: the run continues in %s", cfg.ckpt_path, previous)
        # Lightning warns that a checkpoint folder is not empty: it holds this run's own
        warnings.filterwarnings(
            "ignore", message=f"Checkpoint directory {re.escape(str(previous))}.* is not empty"
        )
    ds = ensure_prepared(cfg.data, cfg.paths)
    items, caches = build_item_inputs(
        ds, cfg.encoder, cfg.paths.cache_dir, device=cfg.device, num_workers=cfg.extract_workers
    )
    # seeded after extraction, which draws from the global generators: a run that finds its
    # features cached then starts from the same weights as the run that extracted them
    L.seed_everything(cfg.seed, workers=True)
    evaluation = RankingEvaluation(
        ds,
        protocols={name: build(p) for name, p in cfg.protocols.items()},
        metrics=build(cfg.eval),
        valid_protocol=cfg.valid_protocol,
    )
    datamodule = build(cfg.datamodule, dataset=ds, item_features=items.content)
    provenance = {
        "dataset": ds.fingerprint,
        "encoder": OmegaConf.to_container(cfg.encoder, resolve=True),
        "caches": caches,
        "choices": choices(),
    }
    model = build_model(cfg.model, dataset_sizes(ds, items), provenance)
    model.attach(ds, items)
    log.info("model %s: %s", model.name, parameter_counts(model))
    if cfg.ckpt_path:
        check_resume(cfg.ckpt_path, model)
    check_step_times(model, datamodule, evaluation, cfg.test, cfg.long_step_hours, cfg.allow_long)
    # evaluation first: checkpointing and early stopping monitor the metrics it logs
    callbacks = [evaluation, *(build(c) for c in (cfg.get("callbacks") or {}).values())]
    loggers = [build(c) for c in (cfg.get("logger") or {}).values()]
    with one_run_per_job(loggers):
        for logger in loggers:
            logger.log_hyperparams(run_config(cfg))
        trainer: L.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        # the training loss is logged every log_every_n_steps batches: no more than an epoch
        # holds, or a small dataset logs none
        steps = len(shard_bounds(len(ds.train), datamodule.batch_size, 0, trainer.world_size))
        trainer.log_every_n_steps = max(1, min(trainer.log_every_n_steps, steps))
        return _fit_and_test(cfg, trainer, model, datamodule, evaluation, provenance)


def _fit_and_test(
    cfg: DictConfig,
    trainer: L.Trainer,
    model: Any,
    datamodule: Any,
    evaluation: RankingEvaluation,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Fit, then (rank 0) test the best checkpoint and score the compared baselines."""
    out_dir = Path(cfg.paths.output_dir)
    ds = datamodule.dataset
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = trainer.checkpoint_callback
    if (
        best is not None
        and best.monitor == cfg.optimized_metric
        and best.best_model_score is not None
    ):
        # the epoch that is kept and tested, not the last one early stopping let run: a
        # sweeper must score a trial by the model it would get
        metrics[cfg.optimized_metric] = float(best.best_model_score)
    ckpt = best.best_model_path if best is not None else ""
    ckpt = str(Path(ckpt).resolve()) if ckpt else ""  # absolute: found from any directory later
    run = {
        "kind": "model",
        "model": model.name,
        "seed": int(cfg.seed),
        "task_name": str(cfg.task_name),
        "optimized_metric": cfg.optimized_metric,
        "best_valid": metrics.get(cfg.optimized_metric),
        "best_checkpoint": ckpt,
        "run_dir": str(out_dir),
        "dataset": {"fingerprint": ds.fingerprint, "root": str(ds.root)},
        "choices": provenance["choices"],
        "caches": provenance["caches"],
        "modalities": getattr(model, "modalities", []),
    }
    comparison: dict[str, dict[str, float]] = {}
    if cfg.test and trainer.is_global_zero:
        if ckpt:
            model.load_state_dict(read_weights(ckpt))
        metrics.update(evaluation.test(trainer, model, out_dir, run))
        for bcfg in (cfg.get("compare") or {}).values():
            baseline = build(bcfg).fit(ds)
            comparison[baseline.name] = evaluation.compare(
                baseline, out_dir / COMPARE_DIR / safe_name(baseline.name)
            )
        atomic_write_json(out_dir / "comparison.json", comparison)
        results = [out_dir / f for f in ("metrics.json", "evaluation.json", "comparison.json")]
        log_files(trainer.loggers, f"results-{out_dir.name}", "results", results)
    return {**run, "metrics": metrics, "comparison": comparison}


def parameter_counts(model: L.LightningModule) -> str:
    """``N parameters (M trainable)``: what Lightning's model summary would tell."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{total:,} parameters ({trainable:,} trainable)"


def results_table(result: dict[str, Any]) -> str:
    """Compact test metrics of the model beside the baselines scored on the same candidates."""
    parts = describe(result["choices"]) if result["choices"] else []
    if result["choices"].get("model") != MULTIREC_MODEL:
        parts = parts[1:]  # the model's name leads the label already
    label = f"{result['model']} ({', '.join(parts)})" if parts else result["model"]
    tests = {k: v for k, v in result["metrics"].items() if k.startswith("test/")}
    return format_tables([(label, tests), *result["comparison"].items()], compact=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@user_errors
def main(cfg: DictConfig) -> float | None:
    if cfg.optimized_metric is None:
        raise ConfigError(
            "optimized_metric must name a validation metric, e.g. valid/sampled/ndcg@10"
        )
    apply_thread_policy(cfg.threads, cfg.device)
    check_launch(cfg)
    rank_zero_only(print_config_tree)(cfg)
    result = train(cfg)
    print_summary(result)
    return result["metrics"].get(cfg.optimized_metric)


@rank_zero_only
def print_summary(result: dict[str, Any]) -> None:
    """The run's compact table (in a sweep: the sweep's table at its end) and where it is."""
    if not in_sweep():
        print(results_table(result))
    print(f"run directory:   {result['run_dir']}  (every metric: metrics.json)")
    print(f"best checkpoint: {result['best_checkpoint']}")
    wandb_dir = Path(result["run_dir"]) / "wandb"
    if wandb_dir.exists():
        print(
            f"W&B offline run: {wandb_dir}  (upload later with `wandb sync {wandb_dir}/offline-run-*`)"
        )


if __name__ == "__main__":
    main()
