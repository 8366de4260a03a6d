"""Cold start end to end: ``data.split.strategy=cold_items`` holds out whole items, so the
``cold_items`` protocol has lists; ContentKNN scores those items from their content, exactly
as its definition says; id-only models cannot tell them apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multirec.baselines.content_knn import ContentKNN, content_vectors
from multirec.baselines.knn import ItemKNN
from multirec.config import build
from multirec.data.config import DataConfig
from multirec.data.prepare import prepare
from multirec.data.splits import TEST, TRAIN, VALID, cold_item_labels, split_labels
from multirec.data.synthetic import generate_sample
from multirec.errors import ConfigError
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import ColdItemsProtocol
from multirec.eval.registry import MetricSet
from multirec.models.items import ItemInputs
from tests.conftest import compose_cfg


def test_cold_item_labels_hold_out_whole_items():
    rng = np.random.default_rng(0)
    items = rng.integers(0, 200, 5000)
    labels = cold_item_labels(items, [0.7, 0.1, 0.2], seed=4)
    for label in (TRAIN, VALID, TEST):  # every item's interactions share one label
        assert not np.isin(items[labels == label], items[labels != label]).any()
    assert len(np.unique(items[labels == VALID])) == 20
    assert len(np.unique(items[labels == TEST])) == 40
    np.testing.assert_array_equal(labels, cold_item_labels(items, [0.7, 0.1, 0.2], seed=4))
    assert not np.array_equal(labels, cold_item_labels(items, [0.7, 0.1, 0.2], seed=5))
    users = rng.integers(0, 300, 5000)
    via_dispatch = split_labels(users, np.zeros(5000), "cold_items", [0.7, 0.1, 0.2], 4, items)
    kept = via_dispatch != -1  # held-out interactions of users without training are dropped
    np.testing.assert_array_equal(via_dispatch[kept], labels[kept])


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    raw = generate_sample(root / "raw", size="tiny", seed=1, covers=False, progress=False)
    (raw / "covers").mkdir(exist_ok=True)
    cfg = DataConfig(name="cold", root=str(raw))
    cfg.covers.policy = "keep"
    cfg.kcore = 1
    cfg.split.strategy = "cold_items"
    return prepare(cfg, root / "prepared", progress=False)


def feature_inputs(ds, dim: int = 6, seed: int = 0) -> ItemInputs:
    rng = np.random.default_rng(seed)
    ok = np.ones(ds.n_items, dtype=bool)
    ok[1] = False  # one item without a cover: its text half still counts
    return ItemInputs.build(
        ds.tag_index(),
        ds.numeric_features(),
        ds.seen_items(),
        (rng.normal(size=(ds.n_items, dim)), ok),
        (rng.normal(size=(ds.n_items, dim)), np.ones(ds.n_items, dtype=bool)),
    )


def test_cold_split_gives_cold_items_lists(cold):
    train = set(cold.train.items.tolist())
    held = set(cold.split("valid").items.tolist()) | set(cold.split("test").items.tolist())
    assert held and not held & train
    lists = ColdItemsProtocol(num_negatives=5).lists(cold, "test")
    assert len(lists.users) > 0
    assert not np.isin(lists.items, cold.train.items).any()  # negatives from the cold pool too


def test_content_knn_scores_by_nearest_training_items(cold):
    items = feature_inputs(cold)
    model = ContentKNN(k=3, items=items).fit(cold)
    vec = content_vectors(items, ["visual", "text"]).numpy()
    seen = cold.seen_items()
    sim = vec @ vec.T
    np.fill_diagonal(sim, -np.inf)
    sim[:, ~seen] = -np.inf
    near = np.argsort(-sim, axis=1)[:, :3]
    s = np.zeros_like(sim)
    rows = np.arange(len(sim))[:, None]
    s[rows, near] = np.maximum(sim[rows, near], 0)
    train = cold.interaction_matrix("train").toarray()
    want = train @ s.T
    users = torch.arange(cold.n_users)
    np.testing.assert_allclose(model.score_all(users).numpy(), want, atol=1e-5)
    lists = torch.from_numpy(np.tile(np.arange(5), (cold.n_users, 1)))
    np.testing.assert_allclose(model.score(users, lists).numpy(), want[:, :5], atol=1e-5)


def test_ids_tie_cold_items_content_tells_them_apart(cold, caplog):
    """ItemKNN knows cold items by id only: every cold item scores 0 (ties, a random order),
    and the evaluation says so."""
    users = torch.arange(cold.n_users)
    cold_items = torch.from_numpy(np.flatnonzero(~cold.seen_items()))
    assert (ItemKNN().fit(cold).score_all(users)[:, cold_items] == 0).all()
    content = ContentKNN(items=feature_inputs(cold)).fit(cold)
    assert content.score_all(users)[:, cold_items].std(dim=1).min() > 0
    result = evaluate(
        content, cold, ColdItemsProtocol(num_negatives=5), "test", metrics=MetricSet(["ndcg"], [5])
    )
    assert (
        result.metrics["test/cold_items/n_unseen_positives"]
        == result.metrics["test/cold_items/n_lists"]
    )
    assert result.metrics["test/cold_items/scores_cold_items"] == 1.0
    assert "random order" not in caplog.text
    knn = evaluate(
        ItemKNN().fit(cold),
        cold,
        ColdItemsProtocol(num_negatives=5),
        "test",
        metrics=MetricSet(["ndcg"], [5]),
    )
    assert knn.metrics["test/cold_items/scores_cold_items"] == 0.0
    assert "ItemKNN knows items only by their training interactions" in caplog.text


def test_content_knn_config_and_bad_settings(tmp_path, cold):
    cfg = compose_cfg("evaluate", ["baseline=content_knn"], tmp_path)
    assert cfg.baseline.encoder.visual is not None and cfg.baseline.cache_dir
    clip = compose_cfg(
        "evaluate", ["baseline=content_knn", "encoder@baseline.encoder=clip_sbert"], tmp_path
    )
    assert "clip" in clip.baseline.encoder.visual.model
    cfg.baseline.cache_dir = str(tmp_path)  # ${paths.cache_dir} resolves only in a Hydra run
    built = build(cfg.baseline)  # as multirec.evaluate builds it: the encoder stays a config
    assert built.encoder.visual._target_.endswith("EfficientNetLite0Encoder")
    with pytest.raises(ConfigError, match="needs item features"):
        ContentKNN()
    with pytest.raises(ConfigError, match="must name some of"):
        ContentKNN(modalities=["audio"], items=feature_inputs(cold))
    no_text = ItemInputs.build(cold.tag_index(), cold.numeric_features(), cold.seen_items())
    with pytest.raises(ConfigError, match="no content features"):
        ContentKNN(items=no_text).fit(cold)
