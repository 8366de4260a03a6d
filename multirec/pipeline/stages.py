"""The stages an entry point composes: sample -> prepare -> extract -> item inputs.

Each call does only missing work: ``data=sample`` generates the synthetic sample on first
use, preparation is skipped when a prepared directory with the same fingerprint exists,
and extraction when the encoder's feature cache does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from multirec.config import to_schema
from multirec.data.config import DataConfig
from multirec.data.dataset import PreparedDataset
from multirec.data.prepare import prepare
from multirec.data.readers import build_reader
from multirec.features.extraction import cached_features
from multirec.models.items import ItemInputs

log = logging.getLogger(__name__)


def data_config(data_cfg: DictConfig) -> DataConfig:
    return to_schema(data_cfg, DataConfig, "data")


def ensure_sample(cfg: DataConfig, progress: bool = True) -> None:
    """Generate the configured synthetic sample into ``cfg.root`` unless an identical one is there.

    The generator records its settings in ``_sample.json``; a sample made with other
    settings (say another seed), or before its preset changed, is regenerated rather than
    silently reused.
    """
    if cfg.sample is None:
        return
    from multirec.data.synthetic import generate_sample, is_current

    root = Path(cfg.root)
    sample = (
        OmegaConf.to_container(cfg.sample)
        if isinstance(cfg.sample, DictConfig)
        else dict(cfg.sample)
    )
    inputs = build_reader(cfg.reader).inputs(root).values()
    if all(p.exists() for p in inputs) and is_current(root, **sample):
        return
    log.info("generating sample %s into %s", sample, root)
    generate_sample(root, progress=progress, **sample)


def ensure_prepared(
    data_cfg: DictConfig, paths_cfg: DictConfig, progress: bool = True
) -> PreparedDataset:
    cfg = data_config(data_cfg)
    ensure_sample(cfg, progress)
    return prepare(cfg, paths_cfg.prepared_dir, progress)


def build_item_inputs(
    ds: PreparedDataset,
    encoder_cfg: DictConfig,
    cache_dir: str | Path,
    device: str = "cpu",
    num_workers: int = 2,
) -> tuple[ItemInputs, dict[str, str | None]]:
    """Item table for the models, extracting any missing cache (``num_workers`` decode covers
    beside the encoder); also each side's cache identity (its file name, or None)."""
    sides, identity = cached_features(ds, encoder_cfg, cache_dir, device, num_workers)
    return ItemInputs.of(ds, sides), identity
