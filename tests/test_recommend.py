"""multirec.recommend: top-k without training items, cold items only on request, and a
one-line error for an unknown user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from multirec.errors import ConfigError
from multirec.pipeline import checkpoints
from multirec.reporting import inspect
from tests.conftest import compose_cfg

REPO = Path(__file__).resolve().parents[1]


class ColdFirst:
    """Scores every cold item above every other, and otherwise by item index."""

    def __init__(self, n_items: int, cold: np.ndarray) -> None:
        self.scores = torch.from_numpy(
            cold.astype(np.float32) * 10 + np.linspace(0, 1, n_items, dtype=np.float32)
        )

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(users), -1).clone()


@pytest.fixture
def with_cold(tmp_path):
    """30 items, 0-3 never trained on (cold); user 0 trained on 10-17, holds out 2 and 20-21."""
    from multirec.bench.evaluation import write_prepared

    users = np.repeat(np.arange(6), 8)
    items = 4 + (np.arange(48) % 26)
    items[:8] = np.arange(10, 18)
    return write_prepared(
        tmp_path / "cold",
        6,
        30,
        {
            "train": (users, items),
            "valid": (np.array([0, 1]), np.array([2, 0])),
            "test": (np.array([0, 0, 3]), np.array([20, 21, 1])),
        },
    )


def test_training_items_excluded_and_cold_items_only_on_request(with_cold):
    ds = with_cold
    cold = inspect.cold_mask(ds)
    assert np.flatnonzero(cold).tolist() == [0, 1, 2, 3]
    model = ColdFirst(ds.n_items, cold)
    u, user = 0, "u0"
    seen = set(ds.item_ids[ds.train.items[ds.train.users == u]])
    warm = inspect.recommend(model, ds, user, k=10)
    assert warm["rank"].to_list() == list(range(1, 11))
    assert not warm["cold"].any() and not (set(warm["item_id"]) & seen)
    assert (np.diff(warm["score"].to_numpy()) <= 0).all()
    assert np.allclose(warm["probability"], 1 / (1 + np.exp(-warm["score"].to_numpy())))
    assert warm["item_id"].to_list() == [f"i{k}" for k in (29, 28, 27, 26, 25, 24, 23, 22, 21, 20)]
    assert warm["held_out"].to_list() == [False] * 8 + [True, True]  # the user's test items 20, 21
    both = inspect.recommend(model, ds, user, k=6, include_cold=True)
    assert both["item_id"].to_list() == ["i3", "i2", "i1", "i0", "i29", "i28"]
    assert (
        both["cold"].to_list() == [True] * 4 + [False] * 2 and both["held_out"][1]
    )  # i2: validation
    everything = inspect.recommend(model, ds, user, k=100, include_cold=True)
    assert len(everything) == ds.n_items - len(seen)  # never padded with excluded items


def test_unknown_user_and_missing_settings_are_named(with_cold, tmp_path):
    with pytest.raises(ConfigError, match=r"user 'nobody' is not in the prepared dataset"):
        inspect.recommend(
            ColdFirst(with_cold.n_items, inspect.cold_mask(with_cold)), with_cold, "nobody"
        )
    from multirec import recommend

    with pytest.raises(ConfigError, match="ckpt_path= is required"):
        recommend.run(compose_cfg("recommend", ["user=u1"], tmp_path))


def test_recommend_from_a_trained_checkpoint(tiny_trained, capsys):
    from multirec import recommend

    root, info = tiny_trained
    ds = checkpoints.checkpoint_dataset(info["ckpt"], root / "outputs" / "prepared")
    u = int(ds.test.users[0])
    cfg = compose_cfg(
        "recommend", [f"ckpt_path={info['ckpt']}", f"user={ds.user_ids[u]}", "k=5"], root
    )
    recs = recommend.run(cfg)
    assert len(recs) == 5 and "rank  item_id" in capsys.readouterr().out
    assert (
        pl.read_csv(Path(cfg.paths.output_dir) / "recommendations.csv")["item_id"].to_list()
        == recs["item_id"].to_list()
    )
    assert not set(recs["item_id"]) & set(ds.item_ids[ds.train.items[ds.train.users == u]])
    # the full-catalogue scores agree with scoring the same items as one candidate list
    model, _ = checkpoints.load_model(
        info["ckpt"], root / "outputs" / "prepared", root / "outputs" / "cache"
    )
    idx = torch.tensor([[int(np.flatnonzero(ds.item_ids == i)[0]) for i in recs["item_id"]]])
    assert np.allclose(
        model.score(torch.tensor([u]), idx).numpy().ravel(), recs["score"].to_numpy(), atol=1e-5
    )


def test_recommend_every_user_to_parquet(tiny_trained):
    """users=all: every user's top-k in one parquet file, the same lists as one user at a time."""
    from multirec import recommend

    root, info = tiny_trained
    cfg = compose_cfg("recommend", [f"ckpt_path={info['ckpt']}", "users=all", "k=4"], root)
    recs = recommend.run(cfg)
    written = pl.read_parquet(Path(cfg.paths.output_dir) / "recommendations.parquet")
    assert written.equals(recs) and written.columns == ["user_id", "rank", "item_id", "score"]
    ds = checkpoints.checkpoint_dataset(info["ckpt"], root / "outputs" / "prepared")
    assert written["user_id"].unique(maintain_order=True).to_list() == ds.user_ids.tolist()
    assert (written.group_by("user_id").len()["len"] == 4).all()
    model, _ = checkpoints.load_model(
        info["ckpt"], root / "outputs" / "prepared", root / "outputs" / "cache"
    )
    for user in ds.user_ids[[0, -1]]:
        one = inspect.recommend(model, ds, str(user), k=4)
        mine = written.filter(pl.col("user_id") == user)
        assert mine["item_id"].to_list() == one["item_id"].to_list()
        assert np.allclose(mine["score"].to_numpy(), one["score"].to_numpy(), atol=1e-5)
    two = [str(ds.user_ids[3]), str(ds.user_ids[1])]
    cfg = compose_cfg(
        "recommend", [f"ckpt_path={info['ckpt']}", f"users=[{two[0]},{two[1]}]"], root
    )
    assert recommend.run(cfg)["user_id"].unique(maintain_order=True).to_list() == two


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "name the users"),
        (["user=u1", "users=all"], "name the users"),
        (["users=everyone"], "users= takes all or a list"),
    ],
)
def test_user_or_users_is_named_exactly_once(tiny_trained, overrides, message):
    from multirec import recommend

    root, info = tiny_trained
    cfg = compose_cfg("recommend", [f"ckpt_path={info['ckpt']}", *overrides], root)
    with pytest.raises(ConfigError, match=message):
        recommend.run(cfg)


def test_cli_unknown_user_is_one_line_on_stderr(tiny_trained):
    root, info = tiny_trained
    proc = subprocess.run(
        [sys.executable, "-m", "multirec.recommend", f"ckpt_path={info['ckpt']}", "user=nobody"],
        cwd=REPO,
        env={**os.environ, "MULTIREC_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith(
        "error: user 'nobody' is not in the prepared dataset"
    )


def test_recommend_config_has_no_key_nothing_reads(tmp_path):
    cfg = compose_cfg("recommend", ["ckpt_path=/x.ckpt", "user=u1"], tmp_path)
    source = (REPO / "multirec" / "recommend.py").read_text()
    assert set(cfg) == {"paths", "ckpt_path", "user", "users", "k", "include_cold", "device"}
    for key in set(cfg) - {"paths"}:
        assert f"cfg.{key}" in source, key
