"""Shared fixtures: configs composed from the real conf/ tree, and tiny datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import multirec.cli  # noqa: F401  (registers the ${pid:} resolver the run folders use)

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
    from multirec.pipeline.stages import ensure_prepared

    root = tmp_path_factory.mktemp("tiny")
    cfg = compose_cfg("prepare", ["data=tiny"], root)
    return ensure_prepared(cfg.data, cfg.paths, progress=False)


# -- a tiny model really trained, baselines really evaluated --------------------------------
def _train_tiny(root: Path) -> dict:
    """Train on the tiny sample under ``root`` (outputs/ laid out as by the entry points) and
    evaluate Random and MostPopular on the same candidates with ``multirec.evaluate``."""
    from multirec import evaluate
    from multirec.train import train

    cfg = compose_cfg("train", ["data=tiny", "logger=none", "trainer.max_epochs=3", "seed=1"], root)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "outputs" / "runs" / "tiny" / "run")
    result = train(cfg)
    for baseline in ("random", "mostpop"):
        ecfg = compose_cfg(
            "evaluate", ["data=tiny", f"baseline={baseline}", "protocol=sampled"], root
        )
        with open_dict(ecfg):
            ecfg.paths.output_dir = str(root / "outputs" / "runs" / "evaluate" / baseline)
        evaluate.run(ecfg)
    return {"ckpt": result["best_checkpoint"], "dataset": result["dataset"]["root"]}


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory) -> tuple[Path, dict]:
    """(root, {"ckpt", "dataset"}): one tiny training per test session, shared through the
    session's base temp folder (test_recommend and test_notebooks import this fixture)."""
    root = tmp_path_factory.getbasetemp() / "tiny-trained"
    done = root / "done.json"
    if not done.is_file():
        info = _train_tiny(root)
        done.write_text(json.dumps(info))
    return root, json.loads(done.read_text())
