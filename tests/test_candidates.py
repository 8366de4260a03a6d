"""Candidate lists: valid negatives, drawn once from a fixed seed, saved and reused; the full
protocol's masks; the cold-item lists; bad input named."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from multirec.baselines.simple import MostPopular
from multirec.bench.evaluation import synthetic_prepared, write_prepared
from multirec.data.dataset import SPLITS
from multirec.errors import ArtefactMismatchError, ConfigError, DataError
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import ColdItemsProtocol, FullProtocol, SampledProtocol
from multirec.eval.registry import MetricSet


@pytest.fixture
def ds(tmp_path):
    return synthetic_prepared(
        tmp_path / "prepared", n_users=300, n_items=200, mean_per_user=12, seed=1
    )


def test_sampled_lists_are_the_papers(ds):
    p = SampledProtocol(num_negatives=20, user_fraction=0.3)
    lists = p.lists(ds, "test")
    test = ds.test
    assert lists.items.shape == (len(lists), 21)
    pairs = set(zip(test.users.tolist(), test.items.tolist(), strict=True))
    assert all((u, i) in pairs for u, i in zip(lists.users, lists.items[:, 0], strict=True))
    # every held-out positive of a chosen user forms exactly one list
    chosen = np.unique(lists.users)
    assert len(lists) == int(np.isin(test.users, chosen).sum())
    assert 0.2 < len(chosen) / len(np.unique(test.users)) < 0.4
    # negatives: distinct, never anything the user interacted with in any split
    seen = ds.interaction_matrix(*SPLITS).toarray()
    neg = lists.items[:, 1:]
    assert not seen[lists.users[:, None], neg].any()
    assert all(len(set(row)) == 20 for row in neg.tolist())
    assert not (neg == lists.items[:, :1]).any()


def test_lists_are_saved_once_and_reused(ds):
    first = SampledProtocol().lists(ds, "test")
    assert first.path.parent == ds.candidates_dir and first.path.is_file()
    mtime = first.path.stat().st_mtime_ns
    again = SampledProtocol().lists(ds, "test")  # another model, another protocol object
    assert again.path == first.path and first.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.items, first.items)
    first.path.unlink()  # drawn again from the same seed: the same lists
    np.testing.assert_array_equal(SampledProtocol().lists(ds, "test").items, first.items)
    assert SampledProtocol().lists(ds, "valid").path != first.path
    other = SampledProtocol(seed=7).lists(ds, "test")
    assert other.path != first.path and not np.array_equal(other.items, first.items)


def test_draw_does_not_depend_on_python_hash_salt(ds):
    """Another process with another hash salt draws the very same lists."""
    mine = SampledProtocol(seed=5).lists(ds, "valid")
    code = (
        "import sys; from multirec.data.dataset import PreparedDataset; "
        "from multirec.eval.protocols import SampledProtocol; "
        "l = SampledProtocol(seed=5).lists(PreparedDataset.load(sys.argv[1]), 'valid'); "
        "l.path.with_name('copy.npy').write_bytes(l.items.tobytes())"
    )
    mine.path.unlink()  # force the other process to draw
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # this process: another (random) salt
    subprocess.run([sys.executable, "-c", code, str(ds.root)], env=env, check=True)
    assert (ds.candidates_dir / "copy.npy").read_bytes() == mine.items.tobytes()


def test_valid_and_test_users_are_the_same_random_share(ds):
    p = SampledProtocol(user_fraction=0.3)
    v, t = set(p.lists(ds, "valid").users.tolist()), set(p.lists(ds, "test").users.tolist())
    both = set(ds.valid.users.tolist()) & set(ds.test.users.tolist())
    assert {u for u in v if u in both} == {u for u in t if u in both}


def test_tampered_or_corrupt_files_are_refused(ds):
    lists = SampledProtocol().lists(ds, "test")
    path = lists.path
    blob = path.read_bytes()
    other = SampledProtocol(num_negatives=5)
    path_other = other.lists(ds, "test").path
    path.write_bytes(path_other.read_bytes())  # lists of other settings under this name
    with pytest.raises(ArtefactMismatchError, match="delete it"):
        SampledProtocol().lists(ds, "test")
    path.write_bytes(blob[:100])
    with pytest.raises(DataError, match="unreadable"):
        SampledProtocol().lists(ds, "test")


def test_full_protocol_masks_training_and_validation_when_testing(ds):
    p = FullProtocol()
    for split, masked in (("valid", ("train",)), ("test", ("train", "valid"))):
        t = p.lists(ds, split)
        want = ds.interaction_matrix(*masked)
        assert (t.exclude != want).nnz == 0
        assert t.exclude.multiply(ds.interaction_matrix(split)).nnz == 0
        assert (t.positives != ds.interaction_matrix(split)[t.users]).nnz == 0
        assert set(t.users.tolist()) == set(ds.split(split).users.tolist())


def test_bad_settings_are_config_errors(ds):
    with pytest.raises(ConfigError, match="list length 21"):
        evaluate(
            MostPopular().fit(ds),
            ds,
            SampledProtocol(num_negatives=20),
            "test",
            metrics=MetricSet(ks=(5, 30)),
        )
    with pytest.raises(ConfigError, match="user_fraction"):
        FullProtocol(user_fraction=0)
    with pytest.raises(ConfigError, match="split"):
        FullProtocol().lists(None, "train")


def cold_dataset(tmp_path):
    """Items 0-9 appear only in validation/test (cold); 10-59 are all trained on; user 0 also
    has cold items 5-9 in validation, so they can never be its negatives."""
    users = np.repeat(np.arange(40), 6)
    items = 10 + (np.arange(240) % 50)
    test_u = np.arange(40)
    test_i = np.arange(40) % 10
    valid_u = np.array([0, 0, 0, 0, 0])
    valid_i = np.array([5, 6, 7, 8, 9])
    return write_prepared(
        tmp_path / "cold",
        40,
        60,
        {"train": (users, items), "valid": (valid_u, valid_i), "test": (test_u, test_i)},
    )


def test_cold_items_lists(tmp_path):
    ds = cold_dataset(tmp_path)
    lists = ColdItemsProtocol(num_negatives=4).lists(ds, "test")
    assert len(lists) == 40 and (lists.items < 10).all()  # positives and negatives cold
    seen = ds.interaction_matrix(*SPLITS).toarray()
    assert not seen[lists.users[:, None], lists.items[:, 1:]].any()
    row0 = lists.items[lists.users == 0][0]
    assert set(row0[1:].tolist()).isdisjoint({5, 6, 7, 8, 9})
    wide = ColdItemsProtocol(num_negatives=20, negative_pool="all").lists(ds, "test")
    assert (wide.items[:, 0] < 10).all() and (wide.items[:, 1:] >= 10).any()
    with pytest.raises(DataError, match="u0 has only 4"):  # 10 cold items, user 0 used 6
        ColdItemsProtocol(num_negatives=5).lists(ds, "test")


def test_cold_items_without_any_cold_positive_is_a_clear_error(ds):
    with pytest.raises(DataError, match="no test interaction has an item without training"):
        ColdItemsProtocol().lists(ds, "test")


def test_unwritable_candidates_folder_is_a_clear_error(ds):
    ds.candidates_dir.write_text("not a folder")
    with pytest.raises(DataError, match="cannot save evaluation candidates"):
        SampledProtocol().lists(ds, "test")
