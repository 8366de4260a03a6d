"""Training negatives: never a training positive, fresh every epoch, seeded, per strategy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from multirec.data.negatives import InteractionSet, NegativeSampler, content_neighbours
from multirec.errors import ConfigError, DataError


def random_matrix(n_users=50, n_items=40, density=0.3, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[:, 0] = True  # a few items every user has
    return sp.csr_matrix(dense.astype(np.float32))


def positives_of(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    coo = m.tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64)


def test_interaction_set_membership():
    m = random_matrix()
    s = InteractionSet(m)
    users = np.repeat(np.arange(50), 40)
    items = np.tile(np.arange(40), 50)
    np.testing.assert_array_equal(s.contains(users, items), m.toarray().ravel() > 0)


@pytest.mark.parametrize("strategy", ["uniform", "popularity", "content"])
def test_never_a_training_positive_and_seeded_per_epoch(strategy):
    m = random_matrix()
    feats = np.random.default_rng(1).normal(size=(40, 8))
    sampler = NegativeSampler(m, 5, strategy, seed=3, item_features=feats, hard_candidates=6)
    users, items = positives_of(m)
    a0 = sampler.sample(users, items, epoch=0)
    assert a0.shape == (len(users), 5) and a0.dtype == np.int64
    assert not (m.toarray()[users[:, None], a0] > 0).any()
    np.testing.assert_array_equal(a0, sampler.sample(users, items, epoch=0))
    assert (a0 != sampler.sample(users, items, epoch=1)).mean() > 0.3
    again = NegativeSampler(m, 5, strategy, seed=3, item_features=feats, hard_candidates=6)
    np.testing.assert_array_equal(a0, again.sample(users, items, epoch=0))


def test_held_out_items_may_be_drawn():
    """Training must not know what is held out: any non-training item can be a negative."""
    m = random_matrix()
    users, items = positives_of(m)
    drawn = NegativeSampler(m, 100, "uniform", seed=0).sample(users, items, epoch=0)
    non_train = ~(m.toarray() > 0)
    hit = np.zeros_like(non_train)
    hit[users[:, None], drawn] = True
    assert (hit == non_train).all()  # every candidate negative of every user was drawn


def test_popularity_follows_training_counts():
    m = random_matrix(n_users=200, n_items=30, density=0.2)
    counts = np.asarray(m.sum(axis=0)).ravel()
    users = np.arange(200).repeat(50)
    drawn = NegativeSampler(m, 1, "popularity", seed=0, popularity_exponent=1.0).sample(
        users, np.zeros_like(users), epoch=0
    )
    freq = np.bincount(drawn.ravel(), minlength=30)
    # item 0 is every user's positive, so never drawn; the rest rank like their counts
    assert freq[0] == 0
    assert np.corrcoef(freq[1:], counts[1:])[0, 1] > 0.8


def test_content_negatives_come_from_the_positives_neighbours():
    m = random_matrix(n_users=30, n_items=40, density=0.1)
    feats = np.random.default_rng(2).normal(size=(40, 6))
    nb = content_neighbours(feats, 5)
    users, items = positives_of(m)
    drawn = NegativeSampler(
        m, 4, "content", seed=0, item_features=feats, hard_candidates=5, hard_fraction=1.0
    ).sample(users, items, epoch=0)
    in_nb = (drawn[:, :, None] == nb[items][:, None, :]).any(axis=2)
    assert in_nb.mean() > 0.8  # the rest: neighbours all taken by the user, fell back to uniform


def test_content_neighbours_match_brute_force():
    feats = np.random.default_rng(3).normal(size=(25, 4)).astype(np.float32)
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    want = np.argsort(-sim, axis=1)[:, :3]
    np.testing.assert_array_equal(content_neighbours(feats, 3, block=7), want)


def test_bad_input():
    m = random_matrix()
    with pytest.raises(ConfigError, match="valid: uniform, popularity, content"):
        NegativeSampler(m, 1, "hardest")
    with pytest.raises(ConfigError, match="item_features"):
        NegativeSampler(m, 1, "content")
    full = sp.csr_matrix(np.ones((3, 4), dtype=np.float32))
    with pytest.raises(DataError, match="user index 0 interacted with all 4 items"):
        NegativeSampler(full, 1, "uniform")
