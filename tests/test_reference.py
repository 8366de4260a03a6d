"""Our neighbourhood models against independent implementations (the ``reference`` extra).

Skipped when implicit or RecBole is not installed. Neighbours tied at the k-th place may be
chosen differently (RecBole's ``argpartition`` picks any of them, implicit its own order, ours
the lower index), so each row's kept similarity values are compared, not their columns, and
the rankings by their NDCG@10.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from multirec.baselines.knn import ItemKNN, UserKNN, topk_cosine
from multirec.bench.evaluation import synthetic_prepared
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import FullProtocol

reference = pytest.importorskip("multirec.bench.reference")
implicit_nn = pytest.importorskip("implicit.nearest_neighbours")
recbole_knn = pytest.importorskip("recbole.model.general_recommender.itemknn")

K = 10


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return synthetic_prepared(
        tmp_path_factory.mktemp("r") / "p", n_users=1000, n_items=150, mean_per_user=12, seed=7
    )


def kept_values(rows: sp.spmatrix) -> list[np.ndarray]:
    """Each row's stored similarities, largest first."""
    rows = sp.csr_matrix(rows)
    return [np.sort(rows[r].data)[::-1] for r in range(rows.shape[0])]


def assert_same_neighbour_similarities(ours: sp.spmatrix, theirs: sp.spmatrix) -> None:
    for a, b in zip(kept_values(ours), kept_values(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4)


@pytest.mark.parametrize("method", ["item", "user"])
def test_recbole_keeps_the_same_neighbours(ds, method):
    x = ds.interaction_matrix("train").astype(np.float32)
    _, w = recbole_knn.ComputeSimilarity(x, topk=K, method=method).compute_similarity()
    rows = x.T.tocsr() if method == "item" else x
    ours = topk_cosine(rows, K, shrink=0.0)
    # RecBole keeps item i's neighbours in column i (scores X @ W), user u's in row u (W @ X)
    assert_same_neighbour_similarities(ours, w.T if method == "item" else w)


def test_implicit_keeps_the_same_neighbours_besides_the_item_itself(ds):
    x = ds.interaction_matrix("train").astype(np.float32).tocsr()
    model = implicit_nn.CosineRecommender(K=K + 1)
    model.fit(x, show_progress=False)
    sim = model.similarity.tolil()
    sim.setdiag(0)  # implicit counts each item as its own first neighbour
    assert_same_neighbour_similarities(topk_cosine(x.T.tocsr(), K, shrink=0.0), sim.tocsr())


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: ItemKNN(k=K, shrink=0.0), lambda ds: reference.recbole_knn(ds, "item", K, 0.0)),
        (
            lambda: ItemKNN(k=K, shrink=0.0, neighbourhood="history"),
            lambda ds: reference.implicit_cosine(ds, K),
        ),
        (lambda: UserKNN(k=K, shrink=0.0), lambda ds: reference.recbole_knn(ds, "user", K, 0.0)),
    ],
    ids=["itemknn-target-recbole", "itemknn-history-implicit", "userknn-recbole"],
)
def test_knn_ranks_like_the_reference_implementation(ds, ours, theirs):
    protocol = FullProtocol()
    a = evaluate(ours().fit(ds), ds, protocol, "test").metrics["test/full/ndcg@10"]
    b = evaluate(theirs(ds), ds, protocol, "test").metrics["test/full/ndcg@10"]
    assert a == pytest.approx(b, rel=0.05)  # ties, frequent on small random data, move it a little
