"""The evaluator and ``python -m multirec.evaluate``: same numbers as a per-user loop, nothing
dropped silently, garbage scores refused, results written, the sweep table printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hydra.errors import ConfigCompositionException

from multirec.baselines.knn import ItemKNN
from multirec.baselines.simple import MostPopular, RandomRecommender
from multirec.bench.evaluation import per_user_loop, synthetic_prepared, write_prepared
from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError, MultirecError
from multirec.eval.evaluator import evaluate, tag_features
from multirec.eval.protocols import FullProtocol, SampledProtocol
from multirec.eval.table import format_tables, job_labels
from multirec.evaluate import run
from multirec.models.base import Recommender, Validation
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return synthetic_prepared(
        tmp_path_factory.mktemp("e") / "p", n_users=2000, n_items=300, mean_per_user=12, seed=5
    )


def test_random_ranker_end_to_end_on_its_expectations(ds):
    res = evaluate(
        RandomRecommender(seed=3).fit(ds), ds, SampledProtocol(user_fraction=1.0), "test"
    )
    n = res.metrics["test/sampled/n_lists"]
    assert n > 2000
    for name, expected in (("recall@10", 10 / 21), ("ndcg@10", 0.2164), ("mrr@10", 0.1395)):
        col = res.lists[name].to_numpy()
        assert abs(col.mean() - expected) < 4 * col.std() / np.sqrt(n), name


def test_full_ranking_equals_a_per_user_loop(ds):
    model = ItemKNN(k=30).fit(ds)
    protocol = FullProtocol()
    res = evaluate(model, ds, protocol, "test", batch_size=64)
    targets = protocol.lists(ds, "test")
    users = targets.users[:150]
    loop = per_user_loop(model, targets, users)
    sub = res.lists.filter(pl.col("user_idx").is_in(users.tolist()))
    assert sub["recall@10"].mean() == pytest.approx(loop["recall@10"], abs=1e-12)
    assert sub["ndcg@10"].mean() == pytest.approx(loop["ndcg@10"], abs=1e-12)


@pytest.mark.parametrize("protocol", [SampledProtocol(), FullProtocol()], ids=lambda p: p.name)
def test_metrics_are_list_means_and_batching_changes_nothing(ds, protocol):
    model = MostPopular().fit(ds)
    a = evaluate(model, ds, protocol, "valid", item_features=tag_features(ds))
    b = evaluate(model, ds, protocol, "valid", item_features=tag_features(ds), batch_size=37)
    assert a.metrics == pytest.approx(b.metrics)
    prefix = f"valid/{protocol.name}/"
    assert all(k.startswith(prefix) for k in a.metrics)
    for k in ("recall", "ndcg", "hitrate", "mrr", "novelty", "ils"):
        for cut in (5, 10):
            assert a.metrics[f"{prefix}{k}@{cut}"] == pytest.approx(a.lists[f"{k}@{cut}"].mean())
    assert 0 < a.metrics[f"{prefix}coverage@10"] <= 1
    assert a.lists.height == a.metrics[f"{prefix}n_lists"]
    assert a.lists.select(a.key_columns).is_unique().all()


def test_users_without_history_and_unseen_items_are_counted_not_dropped(tmp_path):
    # user 3 has no training interactions; items 4 and 5 are never trained on
    train = (np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 2, 2, 3]))
    test = (np.array([0, 1, 2, 3, 3]), np.array([4, 5, 4, 0, 5]))
    d = write_prepared(tmp_path / "p", 4, 30, {"train": train, "test": test})
    model = MostPopular().fit(d)
    for protocol, lists, no_hist in (
        (SampledProtocol(user_fraction=1.0), 5, 2),
        (FullProtocol(), 4, 1),
    ):
        m = evaluate(model, d, protocol, "test").metrics
        p = f"test/{protocol.name}/"
        assert m[p + "n_lists"] == lists
        assert m[p + "n_lists_user_without_history"] == no_hist
        assert m[p + "n_unseen_positives"] == 4  # items 4 and 5, twice each


class Broken(Recommender):
    def __init__(self, value: float, shape_ok: bool = True) -> None:
        self.value, self.shape_ok = value, shape_ok

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        pass

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = torch.full(items.shape, self.value)
        return out if self.shape_ok else out[:, :-1]


def test_non_finite_or_misshapen_scores_are_refused(ds):
    with pytest.raises(MultirecError, match="non-finite"):
        evaluate(Broken(float("nan")).fit(ds), ds, SampledProtocol(), "test")
    with pytest.raises(MultirecError, match="non-finite"):
        evaluate(Broken(float("inf")).fit(ds), ds, FullProtocol(), "test", batch_size=500)
    with pytest.raises(MultirecError, match="shape"):
        evaluate(Broken(0.0, shape_ok=False).fit(ds), ds, SampledProtocol(), "test")


def test_entry_point_writes_results_on_shared_candidates(tmp_path, tiny_prepared):
    out = {}
    for baseline in ("random", "mostpop"):
        cfg = compose_cfg("evaluate", ["data=tiny", f"baseline={baseline}"], tmp_path)
        cfg.paths.prepared_dir = str(tiny_prepared.root.parent)
        cfg.paths.output_dir = str(tmp_path / baseline)
        metrics = run(cfg)
        run_dir = tmp_path / baseline
        assert json.loads((run_dir / "metrics.json").read_text()) == metrics
        ev = json.loads((run_dir / "evaluation.json").read_text())
        lists = pl.read_parquet(run_dir / "lists-test-sampled.parquet")
        assert lists.height == metrics["test/sampled/n_lists"]
        out[baseline] = (ev, lists)
    assert out["random"][0]["candidates"] == out["mostpop"][0]["candidates"]
    assert out["random"][1]["item_id"].to_list() == out["mostpop"][1]["item_id"].to_list()


def test_a_full_ranking_over_the_time_limit_is_refused_before_it_starts(tmp_path, tiny_prepared):
    overrides = ["data=tiny", "baseline=mostpop", "protocol=full", "long_step_hours=1e-9"]
    cfg = compose_cfg("evaluate", overrides, tmp_path)
    cfg.paths.prepared_dir = str(tiny_prepared.root.parent)
    cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"protocol\.user_fraction=.*allow_long=true"):
        run(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()
    cfg.allow_long = True
    assert run(cfg)["test/full/n_users"] > 0


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigCompositionException):
        compose_cfg("evaluate", ["baseline=itemknn", "baseline.neighbours=5"], tmp_path)
    with pytest.raises(ConfigCompositionException):
        compose_cfg("evaluate", ["protocol=sampled", "protocol.negatives=5"], tmp_path)


COMPACT_COLUMNS = ["recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20"]


def test_format_tables():
    text = format_tables(
        [
            ("A", {"test/sampled/ndcg@10": 0.5, "test/sampled/n_lists": 3}),
            ("B", {"test/full/ndcg@10": 0.25, "test/full/n_lists": 2}),
        ]
    )
    assert "test/sampled (3 lists)" in text and "test/full (2 lists)" in text
    assert "| A     |  0.5000 |" in text and "| B     |  0.2500 |" in text


def test_compact_tables_keep_six_columns_sampled_first():
    metrics = {
        f"test/{p}/{m}@{k}": 0.5
        for p in ("full", "cold_items", "sampled")
        for m in ("recall", "ndcg", "mrr", "hitrate", "novelty")
        for k in (5, 10, 20)
    }
    compact = format_tables([("A", metrics)], compact=True)
    titles = [line.split(" (")[0] for line in compact.splitlines() if line.startswith("test/")]
    assert titles == ["test/sampled", "test/full", "test/cold_items"]
    headers = [line for line in compact.splitlines() if line.startswith("| model")]
    assert len(headers) == 3
    for header in headers:
        assert [c.strip() for c in header.split("|")[2:-1]] == COMPACT_COLUMNS
    assert "hitrate@5" in format_tables([("A", metrics)])


def test_sweep_rows_are_labelled_by_the_overrides_that_vary():
    jobs = [["data=tiny", "encoder=clip_bert", "seed=1"], ["data=tiny", "encoder=dino_bert"]]
    assert job_labels(jobs) == ["encoder=clip_bert seed=1", "encoder=dino_bert"]
    assert job_labels([["data=tiny"]]) == [""]


def test_multirun_prints_one_table_per_protocol(tmp_path):
    env = {**os.environ, "MULTIREC_ROOT": str(tmp_path)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "multirec.evaluate",
            "-m",
            "data=tiny",
            "baseline=random,mostpop",
            "protocol=sampled,full",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # no job prints a table of its own: one compact table per protocol, sampled first
    assert out.count("test/sampled (") == 1 and out.count("test/full (") == 1
    tables = out[out.index("test/sampled (") :]
    assert tables.index("test/sampled (") < tables.index("test/full (")
    assert tables.count("| Random") == 2 and tables.count("| MostPopular") == 2
    header = next(line for line in tables.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.split("|")[2:-1]] == COMPACT_COLUMNS
    (table_md,) = tmp_path.glob("outputs/multirun/evaluate/*/table.md")
    assert "hitrate@5" in table_md.read_text()  # the file keeps every metric


def test_a_checkpoint_is_scored_on_the_baselines_candidates(tiny_trained, tmp_path):
    root, info = tiny_trained
    cfg = compose_cfg("evaluate", ["data=tiny"], root)
    cfg.ckpt_path = info["ckpt"]
    cfg.paths.output_dir = str(tmp_path / "ckpt")
    metrics = run(cfg)
    ev = json.loads((tmp_path / "ckpt" / "evaluation.json").read_text())
    assert ev["source"] == {"ckpt_path": str(Path(info["ckpt"]).resolve())}
    baseline = json.loads((root / "outputs/runs/evaluate/random/evaluation.json").read_text())
    assert ev["candidates"] == baseline["candidates"]
    assert ev["metrics"]["test/sampled/n_lists"] == baseline["metrics"]["test/sampled/n_lists"]
    assert 0.0 <= metrics["test/sampled/ndcg@10"] <= 1.0


def test_a_checkpoint_brings_its_dataset_and_is_recorded_absolute(
    tiny_trained, tmp_path, monkeypatch
):
    """Without data= the checkpoint's own dataset is evaluated (the default sample is neither
    generated nor prepared), and a relative ckpt_path is stored absolute for the report."""
    root, info = tiny_trained
    monkeypatch.chdir(Path(info["ckpt"]).parent)
    cfg = compose_cfg("evaluate", [f"ckpt_path={Path(info['ckpt']).name}"], root)
    cfg.paths.output_dir = str(tmp_path / "ckpt")
    run(cfg)
    ev = json.loads((tmp_path / "ckpt" / "evaluation.json").read_text())
    assert ev["dataset"]["root"] == info["dataset"]
    assert ev["source"]["ckpt_path"] == str(Path(info["ckpt"]).resolve())
    assert not (root / "outputs" / "data" / "sample_small").exists()
