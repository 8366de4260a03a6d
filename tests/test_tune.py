"""multirec.tune: every search space, the one budget, what reaches which entry point, and the
contest end to end on the tiny sample (two trials, one epoch)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import OmegaConf

from multirec import tune
from multirec.config import build
from multirec.errors import ConfigError
from multirec.models.neural import build_model

REPO = Path(__file__).resolve().parents[1]
TARGETS = tune.targets(None)


def space_of(target: tune.Target) -> dict:
    return tune.space(tune.compose_config(target.app, target.search_args()), target)


def test_every_model_and_every_baseline_with_settings_declares_a_space():
    tuned = {t.name for t in TARGETS if space_of(t)}
    assert tuned == {
        "multimodal",
        "vbpr",
        "lightgcn",
        "freedom",
        "itemknn",
        "userknn",
        "bprmf",
        "content_knn",
    }
    assert {t.name for t in TARGETS} - tuned == {"random", "mostpop"}


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_a_space_names_settings_of_its_own_model_and_never_reaches_its_constructor(
    target, tmp_path
):
    cfg = tune.compose_config(target.app, target.search_args())
    space = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert space == tune.space(cfg, target)  # a model's compared baselines' spaces stay apart
    distributions, fixed = create_params_from_overrides([f"{k}={v}" for k, v in space.items()])
    assert set(distributions) == set(space) and not fixed  # every entry is searched
    node = cfg[target.group]
    assert "search" not in node  # the space is a node of its own, read by the sweeper only
    for key in space:
        group, _, setting = key.partition(".")
        assert group == target.group and setting in node, key
    if target.group == "baseline":
        if "cache_dir" in node:  # ${paths.cache_dir} resolves only inside a Hydra run
            node.cache_dir = str(tmp_path)
        build(node)  # the baseline's own settings are all its constructor gets


@pytest.mark.parametrize("name", [t.name for t in TARGETS if t.group == "model"])
def test_a_model_yaml_read_as_a_file_builds_without_its_space(name):
    """As multirec.bench.training reads conf/model/multimodal.yaml: the defaults list naming
    the space is no constructor argument."""
    node = OmegaConf.load(tune.CONF_DIR / "model" / f"{name}.yaml")
    assert "defaults" in node
    node.fusion = OmegaConf.load(tune.CONF_DIR / "fusion" / "attention.yaml")
    node.loss = OmegaConf.load(tune.CONF_DIR / "loss" / "bce.yaml")
    sizes = {"n_users": 5, "n_items": 7, "n_tags": 3, "n_numeric": 2}
    model = build_model(node, {**sizes, "visual_dim": 8, "text_dim": 4})
    assert model.hparams.get("defaults") is None


def test_one_budget_selected_on_validation_for_models_and_baselines():
    model = tune.compose_config("train", ["experiment=tune", "model=vbpr", "tune.trials=7"])
    baseline = tune.compose_config(
        "evaluate", [*tune.Target("bprmf", "baseline").search_args(), "tune.trials=7"]
    )
    budgets = {tune.budget_of(model), tune.budget_of(baseline)}
    assert budgets == {tune.Budget(7, "TPESampler", 0, "valid/full/ndcg@10", (1, 2, 3))}
    for cfg in (model, baseline):
        sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
        assert sweeper["n_trials"] == 7 and sweeper["sampler"]["seed"] == 0
        assert sweeper["direction"] == "maximize" and cfg.hydra.mode.name == "MULTIRUN"
    assert model.test is False and model.valid_protocol == "full"
    assert baseline.split == "valid" and baseline.protocol._target_.endswith("FullProtocol")
    peeking = tune.compose_config(
        "train", ["experiment=tune", "optimized_metric=test/full/ndcg@10"]
    )
    with pytest.raises(ConfigError, match="selects on the validation split only"):
        tune.budget_of(peeking)


def test_overrides_reach_the_steps_that_have_their_key():
    configs = {
        step: tune.compose_config(app, list(base)) for step, (app, base) in tune.STEPS.items()
    }
    routed = tune.route(
        ["data=tiny", "trainer.max_epochs=1", "tune.trials=2", "baseline.k=5", "figures=false"],
        configs,
    )
    assert routed == {
        "search-model": ["data=tiny", "trainer.max_epochs=1", "tune.trials=2"],
        "final-model": ["data=tiny", "trainer.max_epochs=1"],
        "search-baseline": ["data=tiny", "tune.trials=2", "baseline.k=5"],
        "final-baseline": ["data=tiny", "baseline.k=5"],
        "report": ["figures=false"],
    }
    with pytest.raises(ConfigError, match=r"^tunes\.trials=2: no step of the tuning has"):
        tune.route(["tunes.trials=2"], configs)
    with pytest.raises(ConfigError, match="multirec.tune sets model itself"):
        tune.route(["model=vbpr"], configs)


def test_an_earlier_contest_is_never_overwritten(tmp_path):
    (tmp_path / "report").mkdir()
    with pytest.raises(ConfigError, match="already holds results"):
        tune.tune(["mostpop"], tmp_path, [])


def test_an_unknown_model_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["models=lightgcn,nope", "data=tiny"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown model or baseline 'nope'")
    assert "models: freedom, lightgcn, multimodal, vbpr" in err


def test_a_contest_end_to_end_on_the_tiny_sample(tmp_path):
    """Search, final runs and the tuned table for a field model, a tuned and an untuned baseline."""
    out = tmp_path / "contest"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "multirec.tune",
            "models=mostpop,itemknn,lightgcn",
            f"out={out}",
            "data=tiny",
            "tune.trials=2",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "encoder/visual=none",  # LightGCN reads no features: nothing to extract
            "encoder/text=none",
            "logger=none",
            "figures=false",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MULTIREC_ROOT": str(tmp_path)},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "mostpop has nothing to tune" in log

    # the searches scored the validation split only, two trials and the defaults each
    for name in ("itemknn", "lightgcn"):
        result = OmegaConf.load(out / "search" / name / "optimization_results.yaml")
        assert 0 < result.best_value <= 1
        folder = out / "search" / name
        trials = [d for d in folder.iterdir() if d.is_dir() and d.name != "defaults"]
        configured = [d for d in (folder / "defaults").iterdir() if d.is_dir()]
        assert len(trials) == 2 and len(configured) == 1  # two searched, the defaults once
        trials += configured
        for d in trials:
            metrics = (
                json.loads((d / "metrics.json").read_text())
                if (d / "metrics.json").is_file()
                else {}
            )
            assert not any(k.startswith("test/") for k in metrics), d
    assert not (out / "search" / "mostpop").exists()

    # the final runs: LightGCN over three seeds, ItemKNN (deterministic) and MostPopular once
    tuning = json.loads(next((out / "final" / "lightgcn").rglob("tuning.json")).read_text())
    assert tuning["trials"] == 2 and tuning["seeds"] == [1, 2, 3] and tuning["defaults_trial"]
    assert set(tuning["best_params"]) == {"model.lr", "model.reg", "model.dim", "model.layers"}
    assert len(list((out / "final" / "lightgcn").rglob("tuning.json"))) == 3
    assert (
        json.loads(next((out / "final" / "itemknn").rglob("tuning.json")).read_text())["seeds"]
        == []
    )
    assert not list((out / "final" / "mostpop").rglob("tuning.json"))

    # the tuned table: every row under both protocols at K = 10 and 20, tuned rows marked
    for protocol in ("sampled", "full"):
        with open(out / "report" / f"table2-test-{protocol}.csv", newline="") as f:
            rows = {r["method"]: r for r in csv.DictReader(f)}
        # only the contest's own runs: the final runs compare with no untuned baseline
        assert set(rows) == {"MostPopular", "ItemKNN\u2021", "LightGCN\u2021"}, rows
        assert rows["LightGCN\u2021"]["n_seeds"] == "3" and rows["ItemKNN\u2021"]["n_seeds"] == "1"
        assert rows["MostPopular"]["tuned"] == "false"
        assert all(r["ndcg@20_mean"] and r["recall@10_mean"] for r in rows.values())
        md = (out / "report" / f"table2-test-{protocol}.md").read_text()
        assert "\u2021 tuned by multirec.tune: 2 trials" in md and "of the valid split" in md
        assert "plus its configured settings as one more" in md
        test = json.loads((out / "report" / f"significance-test-{protocol}.json").read_text())
        assert test["a"] == "LightGCN" and test["b"] in ("MostPopular", "ItemKNN")
    assert "tuned table:" in log
