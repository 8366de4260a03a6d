"""One call that gives an entry point its prepared dataset, doing only missing work.

``data=sample`` generates the synthetic sample on first use; preparation is skipped
when a prepared directory with the same fingerprint exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from multirec.config import to_schema
from multirec.data.config import DataConfig
from multirec.data.dataset import PreparedDataset
from multirec.data.prepare import prepare

log = logging.getLogger(__name__)


def data_config(data_cfg: DictConfig) -> DataConfig:
    return to_schema(data_cfg, DataConfig, "data")


def ensure_sample(cfg: DataConfig, progress: bool = True) -> None:
    """Generate the configured synthetic sample into ``cfg.root`` unless it is there."""
    root = Path(cfg.root)
    if cfg.sample is None or (root / cfg.files.interactions).is_file():
        return
    from multirec.data.sample import generate_sample

    sample = OmegaConf.to_container(cfg.sample) if isinstance(cfg.sample, DictConfig) else dict(cfg.sample)
    log.info("generating sample %s into %s", sample, root)
    generate_sample(root, progress=progress, **sample)


def ensure_prepared(data_cfg: DictConfig, paths_cfg: DictConfig, progress: bool = True) -> PreparedDataset:
    cfg = data_config(data_cfg)
    ensure_sample(cfg, progress)
    return prepare(cfg, paths_cfg.prepared_dir, progress)
