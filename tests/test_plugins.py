"""Extending multirec from outside the package: a toy fusion, neural model, baseline, metric
and reader -- each one class (tests/plugins.py, tests/test_readers.py) plus one YAML
(tests/plugin_conf/) -- run through multirec.train and multirec.evaluate unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict

from multirec import evaluate
from multirec.train import train
from tests.conftest import compose_cfg
from tests.plugins import LowestIndexFirst, MaxFusion, ToyMF
from tests.test_readers import write_jsonl

PLUGIN_CONF = Path(__file__).parent / "plugin_conf"
COMMON = [f"hydra.searchpath=[file://{PLUGIN_CONF}]", "data=toy", "eval=toy"]
NO_ENCODERS = ["encoder/visual=none", "encoder/text=none"]  # ids, tags and counts only


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    write_jsonl(root / "toy_raw", n_users=40, n_items=60, per_user=8)
    return root


def train_with(root: Path, name: str, overrides: list[str]) -> dict:
    cfg = compose_cfg(
        "train",
        [*COMMON, *NO_ENCODERS, "logger=none", "trainer.max_epochs=2", "~compare", *overrides],
        root,
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "runs" / name)
        cfg.trainer.enable_progress_bar = False
    return train(cfg)


def test_toy_fusion_and_metric_through_train(root, monkeypatch):
    built = []
    monkeypatch.setattr(MaxFusion, "forward", _recording(MaxFusion.forward, built))
    result = train_with(root, "fusion", ["fusion=toy"])
    assert built, "the toy fusion never ran"
    m = result["metrics"]
    # the toy metric is reported under every protocol, at the toy eval's cut-offs only
    for protocol in ("sampled", "full"):
        assert 0 <= m[f"test/{protocol}/meanidx@10"] < 60
        assert f"test/{protocol}/ndcg@10" in m and f"test/{protocol}/hitrate@10" not in m
    assert result["dataset"]["root"].split("/")[-1].startswith("toy-")  # the toy reader's data


def test_toy_neural_model_through_train(root):
    result = train_with(root, "model", ["model=toy"])
    assert result["model"] == ToyMF.__name__ and result["best_checkpoint"].endswith("best.ckpt")
    assert result["metrics"]["test/full/recall@10"] >= 0.0


def test_toy_baseline_through_evaluate(root):
    cfg = compose_cfg("evaluate", [*COMMON, "baseline=toy", "protocol=full"], root)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "runs" / "baseline")
    metrics = evaluate.run(cfg)
    # lowest indices first: the top-10 of every list are items 0..9 minus the user's own
    assert metrics["test/full/meanidx@10"] == pytest.approx(4.5, abs=3.0)
    assert LowestIndexFirst().name == "LowestIndexFirst"


def _recording(forward, calls: list):
    def wrapped(self, tokens):
        calls.append(tokens.shape)
        return forward(self, tokens)

    return wrapped
