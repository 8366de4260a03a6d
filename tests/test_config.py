"""Every option of every config group composes; unknown keys and names are errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from multirec.config import to_schema
from multirec.data.config import DataConfig
from multirec.errors import ConfigError
from multirec.runtime.devices import device_name
from tests.conftest import CONF, compose_cfg

PRIMARY_FOR_GROUP = {"baseline": "evaluate", "protocol": "evaluate"}


def group_options() -> list[tuple[str, str]]:
    conf = Path(CONF)
    out = []
    for yaml in sorted(conf.rglob("*.yaml")):
        rel = yaml.relative_to(conf)
        if len(rel.parts) < 2 or rel.parts[0] == "hydra":
            continue
        out.append(("/".join(rel.parts[:-1]), yaml.stem))
    return out


def primary_configs() -> list[str]:
    return sorted(p.stem for p in Path(CONF).glob("*.yaml"))


@pytest.mark.parametrize("name", primary_configs())
def test_primary_config_composes_and_resolves(name, tmp_path):
    cfg = compose_cfg(name, [], tmp_path)
    OmegaConf.resolve(cfg)


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_group_option_composes(group, option, tmp_path):
    primary = PRIMARY_FOR_GROUP.get(group.split("/")[0], "train")
    extra = ["data.root=/some/pixelrec"] if (group, option) == ("data", "pixelrec") else []
    cfg = compose_cfg(primary, [f"{group}={option}", *extra], tmp_path)
    OmegaConf.resolve(cfg)
    if group == "data":
        to_schema(cfg.data, DataConfig, "data")


def test_groups_cover_the_design():
    groups = {g.split("/")[0] for g, _ in group_options()}
    assert {
        "data",
        "encoder",
        "fusion",
        "loss",
        "trainer",
        "logger",
        "experiment",
        "paths",
        "eval",
        "protocol",
        "model",
        "baseline",
    } <= groups


def test_unknown_override_key_is_an_error(tmp_path):
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        compose_cfg("train", ["model.no_such_key=1"], tmp_path)


def test_unknown_group_option_lists_valid_ones(tmp_path):
    with pytest.raises(
        ConfigCompositionException, match="attention.*concat.*gated|Available options"
    ):
        compose_cfg("train", ["fusion=transformer"], tmp_path)


def test_unknown_yaml_key_in_data_is_an_error(tmp_path):
    cfg = compose_cfg("prepare", ["+data.kcor=3"], tmp_path)  # a typo added to the node
    with pytest.raises(ConfigError, match="data.kcor"):
        to_schema(cfg.data, DataConfig, "data")


def test_required_data_root_is_named(tmp_path):
    cfg = compose_cfg("prepare", ["data=pixelrec"], tmp_path)
    with pytest.raises(ConfigError, match=r"data.root.*pass data.root="):
        to_schema(cfg.data, DataConfig, "data")


def test_one_device_setting_drives_the_trainer(tmp_path, monkeypatch):
    cpu = compose_cfg("train", ["device=cpu"], tmp_path).trainer
    assert (cpu.accelerator, cpu.devices, cpu.precision) == ("cpu", 1, "32-true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    gpu = compose_cfg("train", ["device=cuda:1"], tmp_path).trainer
    assert (gpu.accelerator, list(gpu.devices), gpu.precision) == ("gpu", [1], "16-mixed")
    assert compose_cfg("train", ["device=auto"], tmp_path).trainer.accelerator == "gpu"
    ddp = compose_cfg("train", ["device=cuda", "trainer=ddp"], tmp_path).trainer
    assert (ddp.accelerator, ddp.devices, ddp.strategy) == ("gpu", 2, "ddp")
    with pytest.raises(ConfigError, match="device='tpu'.*auto, cpu, cuda or cuda:N"):
        device_name("tpu")


def test_debug_trainer_is_a_short_deterministic_cpu_run(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    debug = compose_cfg("train", ["trainer=debug", "device=cuda"], tmp_path).trainer
    assert (debug.accelerator, debug.max_epochs, debug.deterministic) == ("cpu", 1, True)
    assert debug.limit_train_batches == 5
