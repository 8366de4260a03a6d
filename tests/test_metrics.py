"""Metrics against hand-computed answers, a brute-force oracle over tie orders, and the
random ranker's known expectations on 21-item lists (the paper's protocol)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from multirec.eval.metrics import (
    PositiveRanks,
    accuracy_metrics,
    coverage,
    intra_list_similarity,
    novelty,
    novelty_weights,
    rank_positives,
    top_k_of_candidates,
)

KS = (1, 2, 3, 5)


def metrics_of(
    scores: list[list[float]], positives: list[list[int]], ks=KS, depth: int | None = None
) -> dict[str, np.ndarray]:
    """Metrics via the evaluator's path; ``depth`` = top positions counted exactly (default max K)."""
    s = torch.tensor(scores, dtype=torch.float32)
    rows = torch.tensor([r for r, ps in enumerate(positives) for _ in ps])
    cols = torch.tensor([p for ps in positives for p in ps])
    depth = min(max(ks), s.shape[1]) if depth is None else depth
    top = torch.topk(s, depth, dim=1).values
    ranks = PositiveRanks(rows, *rank_positives(s, top, rows, cols), len(scores))
    n_rel = torch.tensor([len(ps) for ps in positives])
    return {k: v.numpy() for k, v in accuracy_metrics(ranks, n_rel, ks).items()}


def brute_force(scores: list[float], positives: list[int], k: int) -> dict[str, float]:
    """Average the textbook metrics over every order of the tied items."""
    groups = [
        sorted(i for i, x in enumerate(scores) if x == v) for v in sorted(set(scores), reverse=True)
    ]
    totals = dict.fromkeys(("recall", "ndcg", "hitrate", "mrr"), 0.0)
    orders = list(itertools.product(*(itertools.permutations(g) for g in groups)))
    ideal = sum(1 / math.log2(r + 1) for r in range(1, min(len(positives), k) + 1))
    for parts in orders:
        ranking = [i for g in parts for i in g]
        ranks = sorted(ranking.index(p) + 1 for p in positives)
        totals["recall"] += sum(r <= k for r in ranks) / len(positives)
        totals["ndcg"] += sum(1 / math.log2(r + 1) for r in ranks if r <= k) / ideal
        totals["hitrate"] += float(ranks[0] <= k)
        totals["mrr"] += 1 / ranks[0] if ranks[0] <= k else 0.0
    return {m: v / len(orders) for m, v in totals.items()}


def test_single_positive_without_ties():
    m = metrics_of([[0.5, 0.9, 0.1, 0.2]], [[0]])
    assert m["recall@1"][0] == 0 and m["hitrate@1"][0] == 0 and m["mrr@1"][0] == 0
    assert m["recall@2"][0] == 1 and m["hitrate@2"][0] == 1
    assert m["ndcg@2"][0] == pytest.approx(1 / math.log2(3))
    assert m["mrr@2"][0] == pytest.approx(0.5)


def test_positive_tied_with_a_negative_counts_half_each_rank():
    m = metrics_of([[0.9, 0.9, 0.1, 0.2]], [[0]])
    assert m["recall@1"][0] == pytest.approx(0.5)
    assert m["hitrate@1"][0] == pytest.approx(0.5)
    assert m["ndcg@2"][0] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert m["mrr@2"][0] == pytest.approx(0.75)
    assert m["recall@2"][0] == pytest.approx(1.0)


def test_two_positives_recall_ndcg_mrr_by_hand():
    m = metrics_of([[5, 4, 3, 2, 1, 0], [5, 4, 3, 2, 1, 0]], [[0, 3], [2, 3]])
    assert m["recall@3"].tolist() == pytest.approx([0.5, 0.5])
    assert m["ndcg@3"][0] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m["ndcg@5"][0] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert m["mrr@3"].tolist() == pytest.approx([1.0, 1 / 3])
    assert m["mrr@2"][1] == 0 and m["hitrate@2"][1] == 0 and m["hitrate@3"][1] == 1


def test_two_positives_in_a_three_way_tie():
    m = metrics_of([[1, 1, 1, 0]], [[0, 1]])
    assert m["recall@1"][0] == pytest.approx(1 / 3)
    assert m["hitrate@1"][0] == pytest.approx(2 / 3)
    assert m["mrr@2"][0] == pytest.approx(2 / 3 + 1 / 3 * 1 / 2)
    expected_ndcg3 = (2 / 3) * (1 + 1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert m["ndcg@3"][0] == pytest.approx(expected_ndcg3)


def test_matches_brute_force_over_tie_orders():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(5, 8))
        scores = rng.integers(0, 3, size=n).astype(float).tolist()
        positives = sorted(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False).tolist())
        got = metrics_of([scores], [positives])  # exact to depth 5: as the full protocol counts
        whole = metrics_of([scores], [positives], depth=n)  # the whole list: as candidate lists
        assert all(got[k] == pytest.approx(whole[k]) for k in got)
        for k in KS:
            want = brute_force(scores, positives, k)
            for name, value in want.items():
                assert got[f"{name}@{k}"][0] == pytest.approx(value, abs=1e-12), (
                    scores,
                    positives,
                    name,
                    k,
                )


def test_position_of_the_positive_in_the_list_does_not_matter():
    scores = [[0.3, 0.3, 0.7, 0.3, 0.1]]
    a = metrics_of(scores, [[0]])
    b = metrics_of([[0.3, 0.7, 0.3, 0.1, 0.3]], [[4]])
    for k in a:
        assert a[k] == pytest.approx(b[k])


def test_masked_items_are_neither_above_nor_tied():
    s = torch.tensor([[0.5, float("-inf"), float("-inf"), 0.1]])
    top = torch.topk(s, 3, dim=1).values
    above, tied, beyond = rank_positives(s, top, torch.tensor([0, 0]), torch.tensor([0, 3]))
    assert above.tolist() == [0, 1] and tied.tolist() == [0, 0] and not beyond.any()


def test_counts_below_the_depth_are_bounds_and_ties_at_the_cut_are_exact():
    s = torch.tensor([[9.0, 8.0, 5.0, 5.0, 5.0, 5.0, 1.0]])
    top = torch.topk(s, 3, dim=1).values  # 9, 8, 5: the tie group of 5s spills below
    above, tied, beyond = rank_positives(
        s, top, torch.zeros(3, dtype=torch.long), torch.tensor([2, 6, 1])
    )
    assert above.tolist() == [2, 3, 1] and tied.tolist() == [3, 0, 0]
    assert beyond.tolist() == [False, True, False]
    ranks = PositiveRanks(torch.zeros(3, dtype=torch.long), above, tied, beyond, 1)
    assert ranks.expected_rank[0] == 4.5 and ranks.expected_rank[1].isnan()


def test_constant_scorer_gets_exactly_the_random_expectation():
    m = metrics_of([[0.0] * 21], [[0]], ks=(5, 10))
    assert m["recall@10"][0] == pytest.approx(10 / 21)
    assert m["recall@5"][0] == pytest.approx(5 / 21)
    assert m["ndcg@10"][0] == pytest.approx(0.2164, abs=1e-4)
    assert m["ndcg@5"][0] == pytest.approx(0.1404, abs=1e-4)
    assert m["mrr@10"][0] == pytest.approx(0.1395, abs=1e-4)


def test_random_ranker_lands_on_its_expectations():
    n = 40_000
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(n, 21, generator=gen)
    rows = torch.arange(n)
    counts = rank_positives(
        scores, torch.topk(scores, 10, dim=1).values, rows, torch.zeros_like(rows)
    )
    m = accuracy_metrics(PositiveRanks(rows, *counts, n), torch.ones(n), (5, 10))
    for name, expected in (
        ("recall@10", 10 / 21),
        ("ndcg@10", 0.2164),
        ("mrr@10", 0.1395),
        ("recall@5", 5 / 21),
    ):
        se = float(m[name].std()) / math.sqrt(n)
        assert abs(float(m[name].mean()) - expected) < 4 * se, name


def test_novelty_formula_and_range():
    w = novelty_weights(np.array([0, 1, 3]), n_train_users=3)
    assert w.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert novelty(torch.tensor([[0, 1], [1, 2]]), w).tolist() == pytest.approx([0.75, 0.25])


def test_coverage_counts_distinct_items_over_all_lists():
    assert coverage(torch.tensor([[0, 1], [1, 2]]), n_items=4) == pytest.approx(0.75)


def test_intra_list_similarity_categorical_and_cosine():
    top = torch.tensor([[0, 1, 2]])
    assert intra_list_similarity(top, torch.tensor([5, 5, 0])).tolist() == pytest.approx([1 / 3])
    assert intra_list_similarity(top, torch.tensor([0, 0, 0])).tolist() == [0.0]  # 0 = unknown
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert intra_list_similarity(top, feats).tolist() == pytest.approx([1 / 3])
    pair = intra_list_similarity(torch.tensor([[0, 1]]), torch.tensor([[1.0, 0.0], [0.6, 0.8]]))
    assert pair.tolist() == pytest.approx([0.6])


def test_top_k_of_candidates_breaks_ties_by_item_index():
    top = top_k_of_candidates(torch.tensor([[7, 3, 5, 9]]), torch.tensor([[1.0, 1.0, 0.0, 2.0]]), 3)
    assert top.tolist() == [[9, 3, 7]]
