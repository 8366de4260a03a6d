"""Shared fixtures: configs composed from the real conf/ tree, and tiny datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def compose_cfg(config_name: str, overrides: list[str], root: Path) -> DictConfig:
    """Compose a real primary config with ``paths`` rooted in a temporary directory."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.output_dir = str(root / "run")
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    """The ``tiny`` synthetic sample, prepared with ``data=tiny`` (shared, read-only)."""
    from multirec.data.pipeline import ensure_prepared

    root = tmp_path_factory.mktemp("tiny")
    cfg = compose_cfg("prepare", ["data=tiny"], root)
    return ensure_prepared(cfg.data, cfg.paths, progress=False)
