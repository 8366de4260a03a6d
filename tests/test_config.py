"""Every option of every config group composes; unknown keys and names are errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from multirec.config import to_schema
from multirec.data.config import DataConfig
from multirec.errors import ConfigError
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
