"""multirec.train end to end on the tiny sample: outputs, resume checks, other encoders."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from omegaconf import open_dict

from multirec.errors import ArtefactMismatchError
from multirec.train import train
from tests.conftest import compose_cfg
from tests.test_encoders import save_tiny_clip


def test_run_writes_metrics_checkpoints_and_comparison(tiny_trained):
    root, info = tiny_trained
    run = root / "outputs" / "runs" / "tiny" / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "test/sampled/ndcg@10",
        "test/sampled/mrr@10",
        "test/full/recall@10",
        "test/sampled/novelty@10",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    record = json.loads((run / "evaluation.json").read_text())
    # cover and text through shared prototypes: one content token
    assert record["kind"] == "model" and "content" in record["modalities"]
    assert Path(info["ckpt"]).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    comparison = json.loads((run / "comparison.json").read_text())
    assert set(comparison) == {"Random", "MostPopular", "ItemKNN", "UserKNN", "BPR-MF"}
    # baselines were scored on the very same lists as the model
    assert comparison["Random"]["test/sampled/n_lists"] == metrics["test/sampled/n_lists"]


def test_resume_with_another_configuration_is_refused(tiny_trained):
    root, info = tiny_trained
    cfg = compose_cfg("train", ["data=tiny", "logger=none", "fusion=concat", "seed=1"], root)
    with open_dict(cfg):
        cfg.ckpt_path = info["ckpt"]
        cfg.paths.output_dir = str(root / "outputs" / "runs" / "tiny" / "resume-bad")
    with pytest.raises(ArtefactMismatchError, match="fusion"):
        train(cfg)


def test_resume_from_another_optimiser_layout_is_refused_in_one_line(tiny_trained, tmp_path):
    """A checkpoint from a version whose optimiser grouped the parameters otherwise (before
    the row-wise updates: one group a weight decay) cannot be restored into this one."""
    root, info = tiny_trained
    ckpt = torch.load(Path(info["ckpt"]).parent / "last.ckpt", weights_only=True)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    merged = {**groups[0], "params": [i for g in groups for i in g["params"]]}
    ckpt["optimizer_states"][0]["param_groups"] = [merged]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    cfg = compose_cfg("train", ["data=tiny", "logger=none", "seed=1"], root)
    with open_dict(cfg):
        cfg.ckpt_path = str(old)
        cfg.paths.output_dir = str(root / "outputs" / "runs" / "tiny" / "resume-old")
    with pytest.raises(ArtefactMismatchError, match="groups the parameters as") as err:
        train(cfg)
    assert "\n" not in str(err.value)


def test_clip_sbert_from_a_local_tiny_clip(tmp_path):
    clip = save_tiny_clip(tmp_path / "clip")
    cfg = compose_cfg(
        "train",
        [
            "data=tiny",
            "encoder=clip_sbert",
            f"encoder.visual.path={clip}",
            "fusion=attention",
            "logger=none",
            "trainer.max_epochs=1",
            "~compare",
        ],
        tmp_path,
    )
    result = train(cfg)
    assert {"content", "user_content"} <= set(result["modalities"])
    assert result["metrics"]["test/sampled/ndcg@10"] > 0
    assert any(p.name.startswith("visual-") for p in (tmp_path / "outputs" / "cache").iterdir())


def test_resume_with_the_same_configuration_continues(tiny_trained):
    root, info = tiny_trained
    last = Path(info["ckpt"]).parent / "last.ckpt"
    # with the comparison: the resumed run continues in the shared run's folder and rewrites
    # its comparison.json, which later tests (the report's) read
    cfg = compose_cfg("train", ["data=tiny", "logger=csv", "trainer.max_epochs=4", "seed=1"], root)
    with open_dict(cfg):
        cfg.ckpt_path = str(last)
        cfg.paths.output_dir = str(root / "outputs" / "runs" / "tiny" / "resumed")
    result = train(cfg)
    logged = (Path(result["run_dir"]) / "csv").rglob("metrics.csv")
    rows = [line.split(",") for f in logged for line in f.read_text().splitlines()[1:]]
    assert result["metrics"]["test/sampled/ndcg@10"] > 0
    # the checkpoint ended after epoch index 2: only epoch 3 is trained and validated again
    assert {r[0] for r in rows if any(r[2:])} - {"4"} == {"3"}


def test_a_run_reports_the_validation_score_of_the_epoch_it_keeps(tmp_path):
    """Early stopping runs past the best epoch; what a sweeper is given (``best_valid``, the
    entry point's return value) is the score of the kept and tested checkpoint, not of the
    last epoch -- else a configuration that peaks early and then overfits looks worse than
    the model it yields, and tuning passes it over."""
    overrides = ["data=tiny", "logger=csv", "trainer.max_epochs=8", "seed=1", "test=false"]
    # a learning rate at which the tiny sample overfits within the 8 epochs
    cfg = compose_cfg("train", [*overrides, "valid_protocol=full", "model.lr=0.03"], tmp_path)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    result = train(cfg)
    log = pl.read_csv(next((tmp_path / "run").rglob("metrics.csv")))
    scores = log["valid/full/ndcg@10"].drop_nulls().to_list()
    assert len(scores) < 8 and scores[-1] < max(scores)  # early stopping ran past the best
    assert result["best_valid"] == pytest.approx(max(scores))
