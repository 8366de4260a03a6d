"""``python -m multirec.evaluate baseline=itemknn protocol=sampled`` (or ``ckpt_path=...``).

Fits the chosen baseline on the training split -- or loads a trained checkpoint -- and
scores it under the chosen protocol on the saved candidates; writes ``metrics.json``,
``evaluation.json`` (provenance) and the per-list results (``lists-{split}-{protocol}.parquet``,
for paired significance tests) into the run directory and prints a table.
"""

from __future__ import annotations

# first: it sets OpenMP's environment, which torch reads once when the imports below load it
from multirec.runtime import apply_thread_policy

# isort: split
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from multirec.cli import in_sweep, overridden, print_config_tree, user_errors
from multirec.config import build
from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError
from multirec.eval.candidates import CandidateLists
from multirec.eval.evaluator import evaluate, write_results
from multirec.eval.table import format_tables
from multirec.eval.validation import full_ranking_validation
from multirec.models.base import Recommender
from multirec.pipeline.estimates import evaluation_estimate, refuse_long, tell
from multirec.pipeline.stages import ensure_prepared


def load_model(cfg: DictConfig, dataset: PreparedDataset) -> Recommender:
    """The one place the model to evaluate comes from: ``ckpt_path`` if set, else the baseline."""
    if cfg.ckpt_path is not None:
        # imported here: it pulls in the encoder stack, which baselines never need
        from multirec.pipeline.checkpoints import load_checkpoint

        return load_checkpoint(cfg.ckpt_path, dataset, cfg.paths.cache_dir, device=cfg.device)
    return build(cfg.baseline).fit(dataset, full_ranking_validation(dataset))


def model_and_dataset(cfg: DictConfig) -> tuple[Recommender, PreparedDataset]:
    """The model to evaluate and its dataset. A checkpoint records the dataset it was trained
    on, so without ``data=`` that one is used (found under ``paths.prepared_dir``) rather than
    the default sample; with ``data=`` the two must agree."""
    if cfg.ckpt_path is not None and not overridden("data"):
        from multirec.pipeline.checkpoints import load_model as load_trained

        return load_trained(cfg.ckpt_path, cfg.paths.prepared_dir, cfg.paths.cache_dir, cfg.device)
    dataset = ensure_prepared(cfg.data, cfg.paths)
    return load_model(cfg, dataset), dataset


def run(cfg: DictConfig) -> dict[str, float]:
    """Evaluate the configured model; write results into ``cfg.paths.output_dir``; return metrics."""
    model, dataset = model_and_dataset(cfg)
    protocol = build(cfg.protocol)
    estimate = evaluation_estimate(model, protocol, protocol.name, dataset, cfg.split)
    tell(estimate)
    refuse_long(
        estimate, protocol, "protocol", dataset, cfg.split, cfg.long_step_hours, cfg.allow_long
    )
    result = evaluate(
        model,
        dataset,
        protocol,
        cfg.split,
        metrics=build(cfg.eval),
        batch_size=cfg.batch_size,
    )
    lists = protocol.lists(dataset, cfg.split)
    provenance = {
        "model": model.name,
        # absolute: the report matches it to its training run from any working directory
        "source": {"ckpt_path": str(Path(cfg.ckpt_path).resolve())}
        if cfg.ckpt_path is not None
        else {"baseline": OmegaConf.to_container(cfg.baseline, resolve=True)},
        "protocol": OmegaConf.to_container(cfg.protocol, resolve=True),
        "split": cfg.split,
        "dataset": {"fingerprint": dataset.fingerprint, "root": str(dataset.root)},
        "candidates": str(lists.path) if isinstance(lists, CandidateLists) else None,
        "novelty": "mean over top-K of log2((N+1)/(c_i+1))/log2(N+1), c_i = training users of item i",
        "ils_features": "tags (same tag other than 'rare' = 1, else 0)",
    }
    metrics = write_results([result], Path(cfg.paths.output_dir), provenance)
    if not in_sweep():  # a sweep prints one table over its jobs at its end
        print(format_tables([(model.name, metrics)], compact=True))
        print(f"results written to {cfg.paths.output_dir}  (every metric: metrics.json)")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@user_errors
def main(cfg: DictConfig) -> float | None:
    apply_thread_policy(cfg.threads, cfg.device)
    print_config_tree(cfg)
    metrics = run(cfg)
    # set by experiment=tune only: the value its sweeper maximises
    if "optimized_metric" not in cfg:
        return None
    if cfg.optimized_metric not in metrics:
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric} is not among this evaluation's results: "
            "tune with split=valid and the protocol it names (e.g. protocol=full)"
        )
    return metrics[cfg.optimized_metric]


if __name__ == "__main__":
    main()
