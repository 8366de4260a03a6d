"""The benchmark entry points take Hydra-style key=value settings and answer --help at once."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multirec.bench.common import bench_settings

REPO = Path(__file__).resolve().parents[1]
KEYS = {"steps": (30, "timed steps"), "busy": ([0, 1], "busy cores"), "validate": (True, "")}


@pytest.mark.parametrize(
    "name", ["data", "features", "evaluation", "training", "two_tower", "models", "reference"]
)
def test_help_prints_usage_and_keys_without_starting_the_job(name, tmp_path):
    if name == "reference" and importlib.util.find_spec("recbole") is None:
        pytest.skip("the reference extra is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", f"multirec.bench.{name}", "--help"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"python -m multirec.bench.{name}" in proc.stdout
    assert "settings (key=value" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # nothing generated, nothing measured


def test_key_value_settings_override_the_defaults():
    args = bench_settings(["steps=5", "busy=[0]", "validate=false"], KEYS, None)
    assert (args.steps, args.busy, args.validate) == (5, [0], False)
    assert bench_settings([], KEYS, None).busy == [0, 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["step=5"], "step"),
        (["steps=many"], "steps"),
        (["--steps", "5"], "'--steps' is not key=value"),
    ],
)
def test_bad_settings_are_one_line_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_settings(argv, KEYS, None)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_models_bench_measures_a_bounded_fit_and_ranks_every_test_user(tiny_prepared):
    """One run of the models benchmark's per-model function on the tiny sample: the
    iterative fit is extrapolated from what it timed, every test user is ranked."""
    from multirec.bench.models import measure, ratios

    bounds = {"epochs": 2, "steps": 2, "users": 0, "graph_items": 0}
    small_batches = {"overrides": ["datamodule.batch_size=32"]}  # the tiny sample: 400 positives

    neural = measure({"model": "lightgcn", **bounds, **small_batches}, tiny_prepared)
    fit = neural["fit"]
    assert fit["extrapolated"] and fit["conf_max_epochs"] == 20  # conf/trainer's limit
    assert fit["fit_s"] == pytest.approx(fit["one_off_s"] + 20 * fit["per_epoch_s"])
    ranking = neural["full_ranking"]
    assert not ranking["extrapolated"] and ranking["users_ranked"] == ranking["test_users"]
    rss = list(neural["peak_rss_mib"].values())
    assert rss == sorted(rss)  # a peak only grows

    bpr = measure({"model": "bprmf", **bounds, "overrides": []}, tiny_prepared)
    assert bpr["fit"]["epochs_timed"] == 2 and bpr["fit"]["conf_max_epochs"] == 200
    assert bpr["fit"]["per_epoch_s"] == pytest.approx(bpr["fit"]["measured_s"] / 2)
    same = {"fit_compares": "per_epoch_s", "fit": 1.0, "full_ranking_s": 1.0, "peak_rss": 1.0}
    assert ratios(bpr, bpr) == same


def test_ceiling_oracles_rank_the_tiny_sample_above_popularity(tiny_prepared):
    """The generator's own ranking (true tastes) and the topic oracle (true topics, tastes
    from training) beat MostPopular on the same test lists; the oracles are refused on a
    folder the generator did not write."""
    from multirec.baselines.simple import MostPopular
    from multirec.bench.ceiling import TopicOracle, latent
    from multirec.eval.evaluator import evaluate
    from multirec.eval.protocols import FullProtocol

    topic, taste = latent(tiny_prepared)
    assert topic.shape == (tiny_prepared.n_items,) and np.allclose(taste.sum(1), 1.0)

    def ndcg(model) -> float:
        result = evaluate(model.fit(tiny_prepared), tiny_prepared, FullProtocol(), "test")
        return result.metrics["test/full/ndcg@10"]

    pop = ndcg(MostPopular())
    assert ndcg(TopicOracle(topic, taste)) > pop + 0.05
    assert ndcg(TopicOracle(topic, smoothing=0.1)) > pop + 0.05
    scrambled = np.random.default_rng(0).permutation(topic)
    assert ndcg(TopicOracle(scrambled, smoothing=0.1)) < ndcg(TopicOracle(topic, smoothing=0.1))


def test_ceiling_refuses_a_dataset_not_from_the_generator(tiny_prepared, tmp_path):
    import json
    import shutil

    from multirec.bench.ceiling import latent
    from multirec.data.dataset import PreparedDataset
    from multirec.errors import ConfigError

    copy = tmp_path / "prepared"
    shutil.copytree(tiny_prepared.root, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["inputs"]["root"] = str(tmp_path / "own-data")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="_sample.json"):
        latent(PreparedDataset.load(copy))
