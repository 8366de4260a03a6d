"""``python -m multirec.report [runs=outputs] [out=outputs/report]``

Collects finished runs (``multirec.train`` runs and ``multirec.evaluate`` results) into the
paper's Table 2 and Table 3 layouts, one per protocol, with a paired significance test of
the best model against the strongest baseline and the figures; see
:mod:`multirec.reporting.build` for what lands in ``out``. With ``logger=wandb`` (the
default, offline) the tables and figures are also one W&B artifact of type ``report``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from multirec.cli import user_errors
from multirec.config import build
from multirec.reporting.build import CheckpointFigures, Report, build_report
from multirec.tracking import log_files, one_run_per_job, run_config


def run(cfg: DictConfig) -> Report:
    """Build the report the config describes; print it and where it went."""
    figures = None
    if cfg.figures:
        figures = CheckpointFigures(
            protocol=build(cfg.protocol),
            ckpt_path=Path(cfg.ckpt_path) if cfg.ckpt_path else None,
            device=cfg.device,
            examples=cfg.examples,
            max_lists=cfg.max_lists,
        )
    loggers = [build(c) for c in (cfg.get("logger") or {}).values()]
    with one_run_per_job(loggers):
        report = build_report(
            cfg.runs,
            cfg.out,
            prepared_dir=cfg.paths.prepared_dir,
            cache_dir=cfg.paths.cache_dir,
            split=cfg.split,
            dataset=cfg.dataset,
            figures=figures,
        )
        for logger in loggers:
            logger.log_hyperparams(run_config(cfg))
        log_files(loggers, "report", "report", [Path(report.out) / f for f in report.files])
    print((Path(report.out) / "report.md").read_text())
    print(f"report written to {report.out} ({len(report.files)} files)")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
