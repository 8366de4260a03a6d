"""Baselines: correct against hand and brute-force computations, training-only popularity,
BPR-MF's gradients and early stopping, one interface."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from multirec.baselines.bprmf import BPRMF, bpr_gradients
from multirec.baselines.knn import ItemKNN, UserKNN, topk_cosine
from multirec.baselines.simple import MostPopular, RandomRecommender
from multirec.bench.evaluation import synthetic_prepared, write_prepared
from multirec.errors import ArtefactMismatchError, ConfigError, MultirecError
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import FullProtocol, SampledProtocol
from multirec.eval.validation import full_ranking_validation
from multirec.evaluate import load_model
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return synthetic_prepared(
        tmp_path_factory.mktemp("b") / "p", n_users=400, n_items=120, mean_per_user=10, seed=3
    )


ALL = [
    RandomRecommender(seed=1),
    MostPopular(),
    ItemKNN(k=20),
    ItemKNN(k=20, neighbourhood="history"),
    UserKNN(k=20),
    BPRMF(factors=8, epochs=3, batch_size=512),
]


@pytest.mark.parametrize(
    "model", ALL, ids=["random", "mostpop", "itemknn-target", "itemknn-history", "userknn", "bprmf"]
)
def test_score_agrees_with_score_all_and_recommend_excludes_seen(model, ds):
    model.fit(ds)
    users = torch.tensor([0, 5, 5, 17])
    items = torch.tensor([[0, 3, 119], [1, 2, 3], [7, 7, 50], [100, 0, 64]])
    full = model.score_all(users)
    assert full.shape == (4, ds.n_items)
    torch.testing.assert_close(model.score(users, items), torch.gather(full, 1, items))
    seen = ds.interaction_matrix("train")
    top, scores = model.recommend(users, 10, exclude=seen)
    assert top.shape == (4, 10)
    assert not seen.toarray()[users.numpy()[:, None], top.numpy()].any()
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_random_is_a_pure_function_of_seed_user_item(ds):
    a = RandomRecommender(seed=4).fit(ds)
    users = torch.arange(10)
    torch.testing.assert_close(a.score_all(users)[3:5], a.score_all(users[3:5]))
    assert not torch.equal(a.score_all(users), RandomRecommender(seed=5).fit(ds).score_all(users))
    s = a.score_all(torch.arange(200)).flatten()
    assert float(s.min()) >= 0.0 and float(s.max()) < 1.0 and abs(float(s.mean()) - 0.5) < 0.01


def test_most_popular_counts_training_only(tmp_path):
    # item 1 is the most popular in test, item 0 in training: training must win
    train = (np.array([0, 1, 2, 0]), np.array([0, 0, 0, 1]))
    test = (np.array([1, 2, 3, 3]), np.array([1, 1, 1, 0]))
    ds = write_prepared(tmp_path / "p", 4, 3, {"train": train, "test": test})
    pop = MostPopular().fit(ds)
    assert pop.score_all(torch.tensor([0]))[0].tolist() == [3.0, 1.0, 0.0]


def test_most_popular_beats_random_on_the_sampled_protocol(ds):
    p = SampledProtocol(user_fraction=1.0)
    rand = evaluate(RandomRecommender().fit(ds), ds, p, "test").metrics["test/sampled/ndcg@10"]
    pop = evaluate(MostPopular().fit(ds), ds, p, "test").metrics["test/sampled/ndcg@10"]
    assert pop > rand + 0.05


def test_topk_cosine_by_hand():
    # rows a={0,1}, b={0,1,2}, c={3}: sim(a,b) = 2 / (sqrt2*sqrt3 + shrink)
    m = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    s = topk_cosine(m, k=5, shrink=1.0).toarray()
    want = 2 / (np.sqrt(2) * np.sqrt(3) + 1)
    assert s[0, 1] == pytest.approx(want) and s[1, 0] == pytest.approx(want)
    assert s[0, 0] == 0 and s[2].sum() == 0 and s[:, 2].sum() == 0


def test_topk_cosine_keeps_k_best_in_blocks():
    rng = np.random.default_rng(0)
    m = sp.csr_matrix((rng.random((60, 30)) < 0.2).astype(np.float32))
    dense = m.toarray()
    norms = np.sqrt(dense.sum(1))
    sim = dense @ dense.T / (norms[:, None] * norms[None, :] + 2.0)
    np.fill_diagonal(sim, 0)
    got = topk_cosine(m, k=4, shrink=2.0, block=7).toarray()
    for r in range(60):
        nz = np.flatnonzero(got[r])
        assert len(nz) == min(4, int((sim[r] > 0).sum()))
        np.testing.assert_allclose(got[r, nz], sim[r, nz], rtol=1e-5)
        assert got[r, nz].min() >= np.sort(sim[r])[::-1][len(nz) - 1] - 1e-6


def test_knn_scores_match_the_dense_formulas(ds):
    x = ds.interaction_matrix("train").toarray()
    item = ItemKNN(k=10, shrink=5.0).fit(ds)
    user = UserKNN(k=10, shrink=5.0).fit(ds)
    users = torch.arange(30)
    np.testing.assert_allclose(
        item.score_all(users).numpy(), x[:30] @ item.right.toarray(), rtol=1e-5
    )
    np.testing.assert_allclose(
        user.score_all(users).numpy(), user.sim.toarray()[:30] @ x, rtol=1e-5
    )


class TrainOnly:
    """What the neighbourhood models read from a dataset: a training matrix and its identity."""

    fingerprint = "train-only"

    def __init__(self, x: np.ndarray) -> None:
        self.x = sp.csr_matrix(x.astype(np.float32))
        self.n_users, self.n_items = x.shape

    def interaction_matrix(self, *splits: str) -> sp.csr_matrix:
        return self.x


def brute_similarities(sets: list[set[int]], shrink: float) -> dict[tuple[int, int], np.float32]:
    """Shrunk cosine of every pair of distinct rows sharing something, pair by pair.

    In float32 like the model, so that exactly tied similarities stay tied and the
    neighbour choice (ties to the lower index) can be compared exactly.
    """
    norm = [np.sqrt(np.float32(len(s))) for s in sets]
    return {
        (a, b): np.float32(len(sets[a] & sets[b])) / (norm[a] * norm[b] + np.float32(shrink))
        for a in range(len(sets))
        for b in range(len(sets))
        if a != b and sets[a] & sets[b]
    }


def brute_neighbours(sim: dict, n: int, k: int) -> list[set[int]]:
    """Each row's ``k`` most similar rows, ties to the lower index."""
    ranked = [sorted((-float(v), b) for (a, b), v in sim.items() if a == r) for r in range(n)]
    return [{b for _, b in row[:k]} for row in ranked]


def brute_knn_scores(x: np.ndarray, k: int, shrink: float, form: str) -> np.ndarray:
    """score(u, i) by plain loops over users and items, straight from the definitions."""
    n_users, n_items = x.shape
    history = [set(np.flatnonzero(x[u]).tolist()) for u in range(n_users)]
    if form == "user":
        sim = brute_similarities(history, shrink)
        near = brute_neighbours(sim, n_users, k)
    else:
        sim = brute_similarities(
            [set(np.flatnonzero(x[:, i]).tolist()) for i in range(n_items)], shrink
        )
        near = brute_neighbours(sim, n_items, k)
    out = np.zeros((n_users, n_items))
    for u in range(n_users):
        for i in range(n_items):
            if form == "target":  # the scored item's neighbours that the user has
                out[u, i] = sum(sim[i, j] for j in near[i] if j in history[u])
            elif form == "history":  # the user's items that have the scored item as neighbour
                out[u, i] = sum(sim[j, i] for j in history[u] if i in near[j])
            else:  # the user's neighbours who have the item
                out[u, i] = sum(sim[u, v] for v in near[u] if i in history[v])
    return out


@settings(max_examples=60, deadline=None)
@given(
    x=st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(
        lambda shape: arrays(np.bool_, shape)
    ),
    k=st.integers(1, 5),
    shrink=st.sampled_from([0.0, 0.5, 3.0]),
    form=st.sampled_from(["target", "history", "user"]),
)
def test_knn_scores_equal_a_brute_force_per_user_reference(x, k, shrink, form):
    if form == "user":
        model = UserKNN(k=k, shrink=shrink, block=4)
    else:
        model = ItemKNN(k=k, shrink=shrink, block=4, neighbourhood=form)
    model.fit(TrainOnly(x))
    got = model.score_all(torch.arange(x.shape[0])).numpy()
    np.testing.assert_allclose(got, brute_knn_scores(x, k, shrink, form), rtol=1e-5, atol=1e-6)


def test_itemknn_forms_differ_on_whose_neighbours_count():
    # items 0, 1, 2; item 0's nearest item is 1, but item 1's nearest is 2 (k = 1)
    x = np.array([[1, 1, 0], [0, 1, 1], [0, 1, 1], [1, 0, 0]], dtype=np.float32)
    user3 = torch.tensor([3])  # has only item 0
    target = ItemKNN(k=1, shrink=0.0).fit(TrainOnly(x)).score_all(user3)
    history = ItemKNN(k=1, shrink=0.0, neighbourhood="history").fit(TrainOnly(x)).score_all(user3)
    assert float(target[0, 1]) == 0.0  # 0 is not among item 1's neighbours
    assert float(history[0, 1]) == pytest.approx(1 / np.sqrt(2 * 3))  # 1 is item 0's neighbour
    with pytest.raises(ConfigError, match="neighbourhood 'both' unknown"):
        ItemKNN(neighbourhood="both")


def test_bpr_gradients_match_autograd_of_the_stated_loss():
    gen = torch.Generator().manual_seed(0)
    b, n, f, reg = 6, 3, 4, 0.3
    pu, qi, qj = (
        torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
        for shape in ((b, f), (b, f + 1), (b, n, f + 1))
    )
    terms = []
    for r in range(b):
        for c in range(n):  # one triple at a time, as the module docstring states the loss
            x_ui = pu[r] @ qi[r, :f] + qi[r, f]
            x_uj = pu[r] @ qj[r, c, :f] + qj[r, c, f]
            norms = pu[r].square().sum() + qi[r].square().sum() + qj[r, c].square().sum()
            terms.append(torch.nn.functional.softplus(-(x_ui - x_uj)) + reg / 2 * norms)
    want = torch.stack(terms).mean()
    want.backward()
    loss, g_pu, g_qi, g_qj = bpr_gradients(pu.detach(), qi.detach(), qj.detach(), reg)
    torch.testing.assert_close(loss, want.detach())
    for got, param in ((g_pu, pu), (g_qi, qi), (g_qj, qj)):
        torch.testing.assert_close(got, param.grad)


def test_bprmf_learns_and_is_deterministic(ds):
    a = BPRMF(factors=16, epochs=8, lr=0.02, batch_size=512, seed=1).fit(ds)
    assert len(a.epoch_losses) == 8 and a.best_epoch is None  # no validation: every epoch
    assert a.epoch_losses[-1] < a.epoch_losses[0] - 0.1
    b = BPRMF(factors=16, epochs=8, lr=0.02, batch_size=512, seed=1).fit(ds)
    torch.testing.assert_close(
        a.score_all(torch.arange(5)), b.score_all(torch.arange(5)), rtol=0, atol=0
    )
    p = SampledProtocol(user_fraction=1.0)
    rand = evaluate(RandomRecommender().fit(ds), ds, p, "test").metrics["test/sampled/ndcg@10"]
    assert evaluate(a, ds, p, "test").metrics["test/sampled/ndcg@10"] > rand + 0.05


def test_bprmf_stops_early_and_keeps_the_best_validated_factors(ds):
    scripted = [0.1, 0.3, 0.2, 0.25, 0.3, 0.9]  # best at the 2nd validation, then 3 without gain
    snapshots: list[torch.Tensor] = []

    def validation(model):
        snapshots.append(model.score_all(torch.arange(5)).clone())
        return scripted[len(snapshots) - 1]

    m = BPRMF(factors=8, epochs=20, patience=3, validate_every=2, batch_size=512)
    m.fit(ds, validation)
    assert m.validation_scores == {2: 0.1, 4: 0.3, 6: 0.2, 8: 0.25, 10: 0.3}
    assert m.best_epoch == 4 and len(m.epoch_losses) == 10
    torch.testing.assert_close(m.score_all(torch.arange(5)), snapshots[1], rtol=0, atol=0)
    assert not torch.equal(snapshots[1], snapshots[-1])


def test_bprmf_logs_epochs_at_debug_only(ds, caplog):
    with caplog.at_level(logging.INFO, logger="multirec.baselines.bprmf"):
        BPRMF(factors=4, epochs=3, batch_size=1024).fit(ds)
        assert caplog.records == []
        BPRMF(factors=4, epochs=3, batch_size=1024).fit(ds, lambda model: 0.5)
        assert [r.levelno for r in caplog.records] == [logging.INFO]  # the one-line summary


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("negatives", "content", "no content features"),
        ("patience", 0, "patience must be >= 1"),
        ("lr", 0.0, "lr must be > 0"),
        ("reg", -1.0, "reg must be >= 0"),
    ],
)
def test_bprmf_refuses_bad_settings(key, value, message):
    with pytest.raises(ConfigError, match=message):
        BPRMF(**{key: value})


def test_validation_scorer_is_full_ranking_ndcg_on_the_validation_split(ds):
    model = MostPopular().fit(ds)
    want = evaluate(model, ds, FullProtocol(), "valid").metrics["valid/full/ndcg@10"]
    assert full_ranking_validation(ds)(model) == pytest.approx(want)
    test = evaluate(model, ds, FullProtocol(), "test").metrics["test/full/ndcg@10"]
    assert want != pytest.approx(test)


def test_a_model_fitted_elsewhere_or_not_at_all_is_refused(ds, tmp_path):
    other = synthetic_prepared(tmp_path / "o", n_users=400, n_items=121, mean_per_user=10, seed=3)
    model = MostPopular().fit(other)
    with pytest.raises(ArtefactMismatchError, match=r"n_items: fitted on 121, given 120"):
        evaluate(model, ds, SampledProtocol(), "test")
    with pytest.raises(MultirecError, match="has not been fitted"):
        evaluate(MostPopular(), ds, SampledProtocol(), "test")


def test_evaluate_entry_point_early_stops_bprmf_on_validation(tiny_prepared, tmp_path):
    cfg = compose_cfg(
        "evaluate",
        ["data=tiny", "baseline=bprmf", "baseline.epochs=3", "baseline.factors=4"],
        tmp_path,
    )
    model = load_model(cfg, tiny_prepared)
    assert sorted(model.validation_scores) == [1, 2, 3]
    assert model.best_epoch == max(model.validation_scores, key=model.validation_scores.get)
