"""The field's models (VBPR, LightGCN, FREEDOM) on the shared interface: each reduces to its
simpler relative when its addition is switched off, learns enough to beat MostPopular on
the ``mini`` sample under both protocols, scores alike through ``score`` and ``score_all``,
and survives a checkpoint round trip.

Features come from the sample's ground truth (noisy one-hot topics), as in test_learning, so
nothing here runs an encoder.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch
from omegaconf import open_dict

from multirec.baselines.bprmf import BPRMF
from multirec.baselines.simple import MostPopular
from multirec.data.config import DataConfig
from multirec.data.datamodule import RecDataModule
from multirec.data.prepare import prepare
from multirec.data.synthetic import generate_sample
from multirec.errors import ConfigError
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import FullProtocol, SampledProtocol
from multirec.models.base import DatasetSignature
from multirec.models.freedom import FREEDOM
from multirec.models.graph import knn_graph, sample_edges
from multirec.models.items import ItemInputs
from multirec.models.lightgcn import LightGCN
from multirec.models.neural import build_model, dataset_sizes
from multirec.models.vbpr import VBPR
from multirec.pipeline.checkpoints import build_from_checkpoint, read_checkpoint
from multirec.train import train
from tests.conftest import compose_cfg

MODELS = {"vbpr": VBPR, "lightgcn": LightGCN, "freedom": FREEDOM}
# short runs: a higher rate than the YAML defaults, and less pruning for FREEDOM's few epochs
FAST = {
    "vbpr": {"lr": 0.01},
    "lightgcn": {"lr": 0.01},
    "freedom": {"lr": 0.01, "edge_dropout": 0.5},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The graphs here are tiny: with the CPU shared, thread hand-offs cost more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple:
    """The prepared ``mini`` sample and its items with visual and text features."""
    root = tmp_path_factory.mktemp("field")
    raw = generate_sample(
        root / "raw",
        size="mini",
        seed=3,
        misleading_share=0.0,
        broken_share=0.0,
        covers=False,
        progress=False,
    )
    (raw / "covers").mkdir(exist_ok=True)
    cfg = DataConfig(name="field", root=str(raw))
    cfg.covers.policy = "keep"
    ds = prepare(cfg, root / "prepared", progress=False)
    topics = (
        pl.read_csv(raw / "_topics.csv")
        .join(pl.DataFrame({"item_id": ds.item_ids, "order": np.arange(ds.n_items)}), on="item_id")
        .sort("order")
    )
    rng = np.random.default_rng(0)
    n_topics = int(topics["topic"].max()) + 1

    def noisy_onehot(col: str) -> np.ndarray:
        x = np.eye(n_topics, dtype=np.float32)[topics[col].to_numpy()]
        return x + rng.normal(scale=0.3, size=x.shape).astype(np.float32)

    ok = np.ones(ds.n_items, dtype=bool)
    items = ItemInputs.build(
        ds.tag_index(),
        ds.numeric_features(),
        ds.seen_items(),
        (noisy_onehot("cover_topic"), ok),
        (noisy_onehot("topic"), ok),
    )
    return ds, items


def new_model(name: str, ds, items, **settings):
    L.seed_everything(0)
    model = MODELS[name](**dataset_sizes(ds, items), **settings)
    model.attach(ds, items)
    return model


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory) -> dict:
    """Each model trained 3 epochs on ``mini``, with its checkpoint: name -> (model, path)."""
    ds, items = world
    out = {}
    for name in MODELS:
        model = new_model(name, ds, items, **FAST[name])
        trainer = L.Trainer(
            max_epochs=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=RecDataModule(ds, batch_size=256, num_negatives=4, seed=0))
        path = tmp_path_factory.mktemp("ckpt") / f"{name}.ckpt"
        trainer.save_checkpoint(path)
        out[name] = (model, path)
    return out


def ndcg10(model, ds) -> dict[str, float]:
    return {
        p.name: evaluate(model, ds, p, "test").metrics[f"test/{p.name}/ndcg@10"]
        for p in (SampledProtocol(), FullProtocol())
    }


# -- each model reduces to its simpler relative -------------------------------------------
def test_vbpr_without_content_scores_like_bprmf(world):
    ds, items = world
    no_content = ItemInputs.build(ds.tag_index(), ds.numeric_features(), ds.seen_items())
    vbpr = new_model("vbpr", ds, no_content)
    assert vbpr.feature_dim == 0
    torch.nn.init.normal_(vbpr.item_bias.weight)  # nonzero biases, so b_i is checked too
    bpr = BPRMF()
    bpr.fitted_on = DatasetSignature.of(ds)
    bpr.user_factors = vbpr.user_emb.weight.detach().clone()
    bpr.item_factors = vbpr.item_emb.weight.detach().clone()
    bpr.item_bias = vbpr.item_bias.weight.detach().squeeze(1).clone()
    users = torch.arange(ds.n_users)
    torch.testing.assert_close(vbpr.score_all(users), bpr.score_all(users))
    cands = torch.randint(0, ds.n_items, (ds.n_users, 21))
    torch.testing.assert_close(vbpr.score(users, cands), bpr.score(users, cands))


def test_vbpr_with_uninformative_content_learns_as_well_as_without(world):
    """Random features as wide as the catalogue, at the scale of CNN features (non-negative,
    norm ~20): ``E f_i`` can then fit any item vector and ``<beta', f_i>`` any bias, so a
    penalty that misses the content term moves the fit there and the BPR-MF part shrinks to
    nothing. VBPR must keep what it learns without content: with the feature that wide, its
    content term is a second set of item factors, so the two differ by a few per cent either
    way (a penalty that misses it costs half)."""
    ds, _ = world
    rng = np.random.default_rng(0)
    noise = np.abs(rng.normal(size=(ds.n_items, 2 * ds.n_items))).astype(np.float32)
    plain = (ds.tag_index(), ds.numeric_features(), ds.seen_items())
    random_content = ItemInputs.build(*plain, (noise, np.ones(ds.n_items, dtype=bool)))
    ndcg = []
    for inputs in (random_content, ItemInputs.build(*plain)):
        model = new_model("vbpr", ds, inputs, lr=0.01, reg=0.1)
        L.Trainer(
            max_epochs=8,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(model, datamodule=RecDataModule(ds, batch_size=256, num_negatives=4, seed=0))
        ndcg.append(evaluate(model, ds, FullProtocol(), "test").metrics["test/full/ndcg@10"])
    print(f"VBPR full ndcg@10, random content {ndcg[0]:.4f}, none {ndcg[1]:.4f}")
    assert ndcg[0] > 0.9 * ndcg[1], ndcg


def test_vbpr_content_term_is_zero_for_missing_features(world):
    ds, items = world
    ok = items.visual_ok.clone()
    ok[::3] = False
    vbpr = new_model("vbpr", ds, ItemInputs(**{**vars(items), "visual_ok": ok}))
    torch.nn.init.normal_(vbpr.content_bias)
    users = torch.arange(ds.n_users)
    mf = vbpr.user_emb.weight @ vbpr.item_emb.weight.T + vbpr.item_bias.weight.T
    diff = (vbpr.score_all(users) - mf.detach()).abs().amax(dim=0)
    assert torch.all(diff[~ok] < 1e-5) and torch.all(diff[ok] > 1e-3)


def test_vbpr_use_text_concatenates_the_sides_each_at_unit_length(world):
    ds, items = world
    vbpr = new_model("vbpr", ds, items, use_text=True)
    assert vbpr.feature_dim == items.visual_dim + items.text_dim
    idx = torch.tensor([0, 5, 7])
    sides = (items.visual[idx].float(), items.text[idx].float())
    expected = torch.cat([x / x.norm(dim=1, keepdim=True) for x in sides], dim=1)
    torch.testing.assert_close(vbpr.features(idx), expected)


def test_lightgcn_without_layers_is_matrix_factorisation(world):
    ds, items = world
    mf = new_model("lightgcn", ds, items, layers=0)
    users = torch.arange(ds.n_users)
    expected = mf.user_emb.weight @ mf.item_emb.weight.T
    torch.testing.assert_close(mf.score_all(users), expected.detach())


def test_lightgcn_propagates_on_the_normalised_training_graph(world):
    ds, items = world
    model = new_model("lightgcn", ds, items, layers=2)
    r = ds.interaction_matrix("train").toarray()
    a = np.block([[np.zeros((ds.n_users,) * 2), r], [r.T, np.zeros((ds.n_items,) * 2)]])
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0.0)
    norm = inv[:, None] * a * inv[None, :]
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double().numpy()
    e = (e0 + norm @ e0 + norm @ norm @ e0) / 3
    expected = e[: ds.n_users] @ e[ds.n_users :].T
    got = model.score_all(torch.arange(ds.n_users)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_freedom_without_item_graph_is_lightgcn(world):
    ds, items = world
    lightgcn = new_model("lightgcn", ds, items, layers=2)
    users = torch.arange(ds.n_users)
    expected = lightgcn.score_all(users)
    no_features = ItemInputs.build(ds.tag_index(), ds.numeric_features(), ds.seen_items())
    for inputs, settings in ((items, {"item_layers": 0}), (no_features, {})):
        freedom = new_model("freedom", ds, inputs, layers=2, **settings)
        assert freedom.frozen_item_graph() is None
        freedom.load_state_dict(lightgcn.state_dict(), strict=False)  # its projections stay
        torch.testing.assert_close(freedom.score_all(users), expected)
    with_graph = new_model("freedom", ds, items, layers=2)
    with_graph.load_state_dict(lightgcn.state_dict(), strict=False)
    assert not torch.allclose(with_graph.score_all(users), expected)


# -- FREEDOM's two graphs ------------------------------------------------------------------
def test_knn_graph_links_each_valid_item_to_its_nearest_neighbours():
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05]])
    ok = torch.tensor([True, True, True, True, False])
    graph = knn_graph(feats.half(), ok, k=2, block=2).to_dense()
    expected = torch.zeros(5, 5)
    for i, j in ((0, 0), (0, 1), (1, 1), (1, 0), (2, 2), (2, 3), (3, 3), (3, 2)):
        expected[i, j] = 0.5  # 1 / sqrt(k * k): every valid row holds k neighbours
    torch.testing.assert_close(graph, expected)  # item 4 (no feature): no edge either way


def test_edge_pruning_keeps_edges_in_proportion_to_their_weight():
    torch.manual_seed(0)
    weights = torch.tensor([1.0, 4.0])
    kept = torch.stack([sample_edges(weights, 1) for _ in range(4000)])
    assert abs(float((kept == 1).float().mean()) - 0.8) < 0.03


def test_freedom_prunes_for_training_but_scores_on_the_full_graph(world):
    ds, items = world
    model = new_model("freedom", ds, items, edge_dropout=0.5)
    users = torch.arange(ds.n_users)
    before = model.score_all(users)
    model.prune()
    n_edges = ds.interaction_matrix("train").nnz
    pruned = model.training_graph()
    assert pruned._nnz() == 2 * int(n_edges * 0.5)
    # renormalised on the kept edges: an edge's weight is 1 / sqrt(d_u d_i) of the pruned graph
    dense = pruned.to_dense()
    deg = (dense > 0).sum(1).float()
    rows, cols = pruned.indices()
    torch.testing.assert_close(pruned.values(), (deg[rows] * deg[cols]).rsqrt())
    torch.testing.assert_close(model.score_all(users), before)


# -- learning and the shared interface --------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_beats_most_popular_under_both_protocols(world, trained, name):
    ds, _ = world
    model, _ = trained[name]
    got, pop = ndcg10(model, ds), ndcg10(MostPopular().fit(ds), ds)
    print(f"{name}: ndcg@10 {got} vs MostPopular {pop}")
    assert got["sampled"] > pop["sampled"] + 0.1, (got, pop)
    assert got["full"] > pop["full"] + 0.05, (got, pop)


@pytest.mark.parametrize("name", list(MODELS))
def test_score_agrees_with_score_all(world, trained, name):
    ds, _ = world
    model, _ = trained[name]
    users = torch.arange(0, ds.n_users, 3)
    cands = torch.randint(
        0, ds.n_items, (len(users), 30), generator=torch.Generator().manual_seed(0)
    )
    full = model.score_all(users)
    torch.testing.assert_close(model.score(users, cands), full.gather(1, cands))


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoint_round_trip(world, trained, name):
    ds, items = world
    model, path = trained[name]
    loaded = build_from_checkpoint(read_checkpoint(path), path)
    assert type(loaded) is type(model)
    loaded.attach(ds, items)
    users = torch.arange(ds.n_users)
    torch.testing.assert_close(loaded.score_all(users), model.score_all(users))


def test_scoring_tables_are_reused_until_a_parameter_changes(world):
    ds, items = world
    model = new_model("lightgcn", ds, items)
    tables = model.scoring_tables()
    assert model.scoring_tables() is tables
    users = torch.arange(ds.n_users)
    before = model.score_all(users)
    with torch.no_grad():
        model.user_emb.weight.mul_(2)
        user_vecs, item_vecs, _ = model.tables()
    assert model.scoring_tables() is not tables
    after = model.score_all(users)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, user_vecs @ item_vecs.T)
    tables = model.scoring_tables()
    model.on_train_batch_start(None, 0)  # a fused optimiser steps without version bumps
    assert model.scoring_tables() is not tables


# -- settings and the entry point -----------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "settings", "key"),
    [
        ("lightgcn", {"layers": -1}, "model.layers"),
        ("lightgcn", {"dim": 0}, "model.dim"),
        ("vbpr", {"lr": 0.0}, "model.lr"),
        ("vbpr", {"use_text": True, "text_dim": 0}, "model.use_text"),
        ("freedom", {"item_layers": -1}, "model.item_layers"),
        ("freedom", {"edge_dropout": 1.0}, "model.edge_dropout"),
        ("freedom", {"image_weight": 1.5}, "model.image_weight"),
        ("freedom", {"knn_k": 0}, "model.knn_k"),
    ],
)
def test_bad_settings_are_one_line_config_errors(name, settings, key):
    sizes = {
        "n_users": 3,
        "n_items": 4,
        "n_tags": 1,
        "n_numeric": 0,
        "visual_dim": 2,
        "text_dim": 2,
    }
    with pytest.raises(ConfigError, match=key) as err:
        MODELS[name](**{**sizes, **settings})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_config_builds_and_keeps_provenance_as_data(tmp_path, name):
    cfg = compose_cfg("train", [f"model={name}"], tmp_path)
    sizes = {
        "n_users": 3,
        "n_items": 4,
        "n_tags": 1,
        "n_numeric": 0,
        "visual_dim": 2,
        "text_dim": 2,
    }
    provenance = {
        "encoder": {"visual": {"_target_": "multirec.features.encoders.text.HFTextEncoder"}}
    }
    model = build_model(cfg.model, sizes, provenance)
    assert isinstance(model, MODELS[name])
    stored = model.hparams.provenance  # plain containers, so checkpoints load weights-only
    assert type(stored) is dict and type(stored["encoder"]["visual"]) is dict
    assert stored == provenance


def test_train_entry_point_runs_a_graph_model(tmp_path):
    cfg = compose_cfg(
        "train",
        [
            "data=tiny",
            "model=freedom",
            "encoder/visual=none",
            "encoder/text=none",
            "logger=none",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "~compare",
        ],
        tmp_path,
    )
    with open_dict(cfg):
        cfg.trainer.enable_model_summary = False
    result = train(cfg)
    assert result["model"] == "FREEDOM" and result["best_checkpoint"]
    assert 0.0 <= result["metrics"]["test/full/ndcg@10"] <= 1.0
