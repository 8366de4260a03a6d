"""The neural recommender under both scorings: the configured fusion runs, switched-off
modalities have no parameters, losses behave, two-tower item vectors are cached until a
weight changes, shared negatives never include the user's own items, and bad training
states stop with a named step."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from multirec.errors import ConfigError, MultirecError
from multirec.models import fusion as F
from multirec.models import losses as losses_
from multirec.models.items import ItemInputs
from multirec.models.neural import build_model
from multirec.models.recommender import MultimodalRecommender
from multirec.reporting.inspect import without
from tests.conftest import compose_cfg

N_USERS, N_ITEMS, N_TAGS, DV, DT = 7, 11, 3, 12, 8
# every modality on, so that each test sees tags and counts too
ALL = ["model.use_tags=true", "model.use_numeric=true"]
PAIRWISE = ["model.scoring=pairwise", "loss=bce", *ALL]
TWO_TOWER = ["model.scoring=two_tower", "loss=softmax", *ALL]


def items(visual: bool = True, text: bool = True) -> ItemInputs:
    rng = np.random.default_rng(0)
    ok = np.ones(N_ITEMS, dtype=bool)
    ok[0] = False
    return ItemInputs.build(
        rng.integers(0, N_TAGS, N_ITEMS),
        rng.normal(size=(N_ITEMS, 7)),
        np.arange(N_ITEMS) < 9,
        (rng.normal(size=(N_ITEMS, DV)), ok) if visual else None,
        (rng.normal(size=(N_ITEMS, DT)), ok) if text else None,
    )


def model_from(
    tmp_path, overrides: list[str], visual: bool = True, text: bool = True
) -> MultimodalRecommender:
    cfg = compose_cfg("train", overrides, tmp_path)
    sizes = {
        "n_users": N_USERS,
        "n_items": N_ITEMS,
        "n_tags": N_TAGS,
        "n_numeric": 7,
        "visual_dim": DV if visual else 0,
        "text_dim": DT if text else 0,
    }
    m = build_model(cfg.model, sizes)
    m.attach_items(items(visual, text), diagonal_train())
    m.log = m.log_dict = lambda *a, **k: None
    return m


def diagonal_train() -> sp.csr_matrix:
    """User u trained on item u; items 9 and 10 have no training interactions."""
    return sp.csr_matrix(
        (np.ones(N_USERS), (np.arange(N_USERS), np.arange(N_USERS))), shape=(N_USERS, N_ITEMS)
    )


FUSIONS = [("concat", F.ConcatFusion), ("gated", F.GatedFusion), ("attention", F.AttentionFusion)]


@pytest.mark.parametrize(("name", "cls"), FUSIONS)
def test_configured_fusion_is_the_one_that_runs(tmp_path, name, cls):
    m = model_from(tmp_path, [*PAIRWISE, f"fusion={name}"])
    assert type(m.fusion) is cls
    calls = []
    m.fusion.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    users = torch.tensor([0, 1, 2])
    out = m(users, torch.tensor([[0, 1, 2, 3]] * 3))
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    assert calls == [torch.Size([12, len(m.modalities), m.hparams.dim])]
    # full-catalogue scoring (item tokens shared across users) agrees with per-list scoring
    full = m.score_all(users)
    lists = m.score(users, torch.arange(N_ITEMS).expand(3, -1))
    assert torch.allclose(full, lists, atol=1e-5)


@pytest.mark.parametrize(("name", "cls"), FUSIONS)
def test_two_tower_fuses_each_side_once(tmp_path, name, cls):
    m = model_from(tmp_path, [*TWO_TOWER, f"fusion={name}"])
    assert type(m.user_fusion) is cls and type(m.item_fusion) is cls
    assert not hasattr(m, "fusion") and not hasattr(m, "head")
    calls = {"user": [], "item": []}
    for side in calls:
        getattr(m, f"{side}_fusion").register_forward_hook(
            lambda mod, inp, out, side=side: calls[side].append(inp[0].shape)
        )
    users = torch.tensor([0, 1, 2])
    full = m.score_all(users)
    lists = m.score(users, torch.tensor([[0, 1, 2, 3]] * 3))
    # the item tower ran once over the catalogue, the user tower once per call
    assert calls["item"] == [torch.Size([N_ITEMS, len(m.item_modalities), m.hparams.dim])]
    assert calls["user"] == [torch.Size([3, len(m.user_modalities), m.hparams.dim])] * 2
    assert torch.allclose(full[:, :4], lists, atol=1e-5)
    assert torch.allclose(full, m.score(users, torch.arange(N_ITEMS).expand(3, -1)), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls", "flatten"])
@pytest.mark.parametrize("scoring", [PAIRWISE, TWO_TOWER])
def test_attention_pooling_options(tmp_path, pooling, scoring):
    m = model_from(
        tmp_path, [*scoring, "fusion=attention", f"fusion.pooling={pooling}", "fusion.layers=2"]
    )
    w = m.modality_weights(torch.tensor([0, 1]), torch.tensor([[1, 2], [3, 4]]))
    assert w.shape == (2, 2, len(m.modalities))
    if scoring is PAIRWISE:
        assert torch.allclose(w.sum(-1), torch.ones(2, 2), atol=1e-5)
    else:  # the user tower's weights, then the item tower's, each halved
        n_user = len(m.user_modalities)
        assert torch.allclose(w[..., :n_user].sum(-1), torch.full((2, 2), 0.5), atol=1e-5)
        assert torch.allclose(w.sum(-1), torch.ones(2, 2), atol=1e-5)
    assert torch.isfinite(m.score_all(torch.tensor([0, 1]))).all()


def test_bad_settings_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="model.scoring='dot' is unknown"):
        model_from(tmp_path, ["model.scoring=dot"])
    with pytest.raises(ConfigError, match="need model.scoring=two_tower"):
        model_from(tmp_path, ["model.scoring=pairwise", "loss=softmax"])
    with pytest.raises(ConfigError, match="loss.temperature=0"):
        model_from(tmp_path, [*TWO_TOWER, "loss.temperature=0"])


def test_switched_off_modalities_have_no_parameters(tmp_path):
    joint = model_from(tmp_path, PAIRWISE)
    assert joint.item_modalities == ["item", "content", "tag", "numeric"]
    assert not any(hasattr(joint, f"{m}_proj") for m in ("visual", "text"))
    per_side = [*PAIRWISE, "model.joint_prototypes=false"]
    text_only = model_from(tmp_path, per_side, visual=False)
    assert "visual" not in text_only.modalities and not hasattr(text_only, "visual_proj")
    assert not any("visual" in n for n, _ in text_only.named_parameters())
    visual_only = model_from(tmp_path, per_side, text=False)
    assert "text" not in visual_only.modalities and not hasattr(visual_only, "text_proj")
    no_ids = model_from(tmp_path, [*per_side, "model.use_ids=false"])
    assert not hasattr(no_ids, "user_emb") and not hasattr(no_ids, "item_emb")
    assert no_ids.user_modalities == ["user_visual", "user_text"]
    out = no_ids(torch.tensor([0, 1]), torch.tensor([[9, 10], [9, 10]]))
    assert torch.isfinite(out).all()
    paper = model_from(tmp_path, [*per_side, "model.user_profile=false"])
    assert paper.modalities == ["user", "item", "visual", "text", "tag", "numeric"]
    with pytest.raises(MultirecError, match="no user-side token"):
        model_from(tmp_path, ["model.use_ids=false", "model.user_profile=false"])
    towers = model_from(tmp_path, [*TWO_TOWER, "model.use_ids=false", "model.item_bias=false"])
    assert not any(
        n.startswith(("user_emb", "item_emb", "item_bias")) for n, _ in towers.named_parameters()
    )
    assert torch.isfinite(towers.score_all(torch.tensor([0, 1]))).all()
    # popularity without id embeddings: the content-only model keeps its item bias
    popular = dict(model_from(tmp_path, [*TWO_TOWER, "model.use_ids=false"]).named_parameters())
    assert "item_bias" in popular and not any(n.startswith("item_emb") for n in popular)


def test_popularity_prior_is_the_log_training_share_under_the_learned_bias(tmp_path):
    m = model_from(tmp_path, [*TWO_TOWER, "model.popularity_prior=true"])
    # item i has i + 1 training interactions among items 0-5; 6-8 are seen but have none
    counts = np.array([1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0])
    rows = np.concatenate([np.arange(c) for c in counts])
    cols = np.repeat(np.arange(N_ITEMS), counts)
    m.attach_items(items(), sp.csr_matrix((np.ones(len(rows)), (rows, cols)), (N_USERS, N_ITEMS)))
    every = torch.arange(N_ITEMS)
    unseen = m._unseen(every, False)
    assert unseen.tolist() == [False] * 9 + [True] * 2
    with torch.no_grad():
        start = m._item_vectors(every, unseen)[1]
        m.item_bias.normal_()
        m.unseen_bias.fill_(-3.0)
        bias = m._item_vectors(every, unseen)[1]
    share = torch.from_numpy(np.log(np.maximum(counts, 0.5) / counts.sum())).float()
    # from the start (item biases zero) it ranks the seen items by training popularity
    assert torch.allclose(start[:9], share[:9], atol=1e-6)
    assert torch.argsort(start[:9], descending=True)[:6].tolist() == [5, 4, 3, 2, 1, 0]
    assert torch.allclose(bias[:9], share[:9] + m.item_bias[:9], atol=1e-6)
    # an unseen item, or (training) a dropped id, gets the shared bias as a whole, plus a
    # guess from its content (zero at the start)
    assert (bias[9:] == -3.0).all()
    dropped = torch.zeros(N_ITEMS, dtype=torch.bool)
    dropped[5] = True
    with torch.no_grad():
        assert m._item_vectors(every, dropped)[1][5] == -3.0
        m.eval()  # no dropout: the two passes below see the same fused vectors
        m.unseen_popularity.weight.normal_()
        fused = m.item_fusion(torch.stack(m._item_tokens(every, unseen), dim=1))[0]
        guess = -3.0 + m.unseen_popularity(fused).squeeze(-1)
        bias = m._item_vectors(every, unseen)[1]
    assert torch.allclose(bias[9:], guess[9:], atol=1e-6) and guess[9] != guess[10]
    assert torch.allclose(bias[:9], share[:9] + m.item_bias[:9], atol=1e-6)
    off = model_from(tmp_path, [*TWO_TOWER, "model.popularity_prior=false"])
    assert (off._item_vectors(every, unseen)[1] == 0).all()


def test_user_profiles_are_mean_features_of_valid_training_items(tmp_path):
    m = model_from(tmp_path, [*PAIRWISE, "model.prototypes=0"])
    feats = m.items.visual.float()
    # user 0 trained on item 0 only, whose features are invalid: zero profile
    assert torch.allclose(m.profiles["visual"][0].float(), torch.zeros(DV))
    assert torch.allclose(m.profiles["visual"][3].float(), feats[3], atol=1e-2)


@pytest.mark.parametrize("scoring", [PAIRWISE, TWO_TOWER])
def test_cold_items_use_shared_vector(tmp_path, scoring):
    m = model_from(tmp_path, [*scoring, "fusion=concat"]).eval()
    # items 9 and 10 have no training interactions: their id token is the shared one
    cold = torch.tensor([9, 10])
    toks = m._item_tokens(cold, m._unseen(cold, False))
    assert torch.equal(toks[0][0], toks[0][1])
    assert torch.equal(toks[0][0], m.unseen_item.detach())
    assert m.scores_cold_items


def test_id_only_model_ties_all_cold_items(tmp_path):
    m = model_from(
        tmp_path, [*TWO_TOWER, "model.use_tags=false", "model.use_numeric=false"], False, False
    )
    assert not m.scores_cold_items
    scores = m.score_all(torch.arange(N_USERS))
    assert torch.equal(scores[:, 9], scores[:, 10])


def _batch():
    return (
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([[5, 6], [6, 7], [7, 8], [8, 5]]),
    )


LOSSES = [
    [*PAIRWISE, "loss=bce"],
    [*PAIRWISE, "loss=bpr"],
    [*PAIRWISE, "loss=bce_contrastive"],
    [*TWO_TOWER],
    [*TWO_TOWER, "loss.in_batch=true"],
    [*TWO_TOWER, "loss.share_negatives=false"],
    ["model.scoring=two_tower", "loss=bpr", "loss.share_negatives=true", "loss.in_batch=true"],
    ["model.scoring=two_tower", "loss=bce"],
]


@pytest.mark.parametrize("overrides", LOSSES, ids=lambda o: " ".join(o))
def test_losses_train(tmp_path, overrides):
    # no dropout: in-batch negatives are other rows' positives, which random dropout would
    # turn into noise on a four-row toy batch
    torch.manual_seed(0)
    no_dropout = ["model.dropout=0", "model.id_dropout=0", "fusion.dropout=0"]
    m = model_from(tmp_path, [*overrides, "fusion=concat", *no_dropout])
    opt = m.configure_optimizers()
    for group in opt.param_groups:
        group["lr"] = 1e-2
    values = []
    for _ in range(30):
        opt.zero_grad()
        value = m.training_step(_batch(), 0)
        value.backward()
        opt.step()
        values.append(value.item())
    assert np.mean(values[-5:]) < values[0]


def test_losses_ignore_masked_negatives():
    pos, neg = torch.tensor([1.0, 0.5]), torch.tensor([[0.0, 9.0, -1.0], [2.0, 3.0, 9.0]])
    valid = torch.tensor([[True, False, True], [True, True, False]])
    kept = [neg[0, [0, 2]], neg[1, [0, 1]]]
    softmax = losses_.SoftmaxLoss(temperature=0.5)
    want = torch.stack(
        [
            torch.logsumexp(torch.cat([p[None], k]) / 0.5, 0) - p / 0.5
            for p, k in zip(pos, kept, strict=True)
        ]
    ).mean()
    assert torch.allclose(softmax(pos, neg, valid)["loss"], want)
    bpr = -torch.nn.functional.logsigmoid(torch.cat([pos[0] - kept[0], pos[1] - kept[1]])).mean()
    assert torch.allclose(losses_.BPRLoss()(pos, neg, valid)["loss"], bpr)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.cat([pos, *kept]), torch.tensor([1.0, 1.0, 0, 0, 0, 0])
    )
    assert torch.allclose(losses_.BCELoss()(pos, neg, valid)["loss"], bce)


def test_shared_negatives_skip_the_users_own_items(tmp_path):
    m = model_from(tmp_path, [*TWO_TOWER, "loss.in_batch=true"])
    users, pos, neg = _batch()
    pos_logits, neg_logits, valid, _ = m._two_tower_step(users, pos, neg)
    # columns: the batch's distinct negatives 5..8, then its distinct positives 0..3
    columns = torch.tensor([5, 6, 7, 8, 0, 1, 2, 3])
    assert neg_logits.shape == valid.shape == (4, len(columns))
    own = torch.from_numpy(diagonal_train()[users.numpy()].toarray()[:, columns.numpy()] > 0)
    assert torch.equal(valid, ~own)
    assert (~valid).sum() == 4  # each user's own positive among the in-batch columns


def test_logq_corrects_by_popularity_only_where_negatives_are_in_batch(tmp_path):
    m = model_from(tmp_path, TWO_TOWER)
    m.item_log_share = torch.log(torch.linspace(0.01, 0.2, N_ITEMS))
    items_ = torch.arange(N_ITEMS)
    uniform = m._expected_log_share(items_, n_sampled=8, n_batch=0)
    assert torch.allclose(uniform, uniform[0].expand_as(uniform))
    in_batch = m._expected_log_share(items_, n_sampled=8, n_batch=16)
    assert (in_batch.diff() > 0).all()  # popular items are likelier negatives: larger correction


def test_logq_needs_known_draw_probabilities(tmp_path):
    from multirec.data.negatives import NegativeSampler

    m = model_from(tmp_path, TWO_TOWER)
    feats = np.random.default_rng(0).normal(size=(N_ITEMS, 4))

    class Trainer:
        class datamodule:
            sampler = NegativeSampler(diagonal_train(), 2, "content", item_features=feats)

    m.trainer = Trainer()
    with pytest.raises(ConfigError, match="set loss.logq=false"):
        m.on_fit_start()
    Trainer.datamodule.sampler = NegativeSampler(diagonal_train(), 2, "popularity")
    m.on_fit_start()
    assert torch.allclose(m.draw_probabilities.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_item_vectors_cached_until_a_weight_or_the_items_change(tmp_path):
    m = model_from(tmp_path, TWO_TOWER).eval()
    runs = []
    m.item_fusion.register_forward_hook(lambda mod, inp, out: runs.append(1))
    users = torch.tensor([0, 1])
    first = m.score_all(users)
    m.score_all(users)
    m.score(users, torch.tensor([[1, 2], [3, 4]]))
    assert len(runs) == 1
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.training_step(_batch(), 0).backward()
    opt.step()
    assert len(runs) == 2  # training runs the item tower on the batch's items
    assert not torch.allclose(m.score_all(users), first)
    assert len(runs) == 3  # the step changed the weights: recomputed
    with without(m, "visual"):
        m.score_all(users)
    assert len(runs) == 4
    m.load_state_dict(m.state_dict())
    m.score_all(users)
    assert len(runs) == 5


def test_the_models_own_fused_optimiser_never_leaves_stale_item_vectors(tmp_path):
    """Fused AdamW steps without bumping the version counters the cache key reads: scoring
    after a training step must still use the new item vectors, or validation (early
    stopping, the best epoch) would rank new user vectors against old item vectors."""
    m = model_from(tmp_path, TWO_TOWER).eval()
    users = torch.tensor([0, 1])
    before = m.score_all(users)
    opt = m.configure_optimizers()
    assert opt.defaults["fused"]
    m.train()
    m.on_train_batch_start(_batch(), 0)  # as Lightning calls it before every step
    m.training_step(_batch(), 0).backward()
    opt.step()
    after = m.score_all(users)
    m._table = None  # recomputed from scratch
    assert torch.allclose(after, m.score_all(users)) and not torch.allclose(after, before)


def test_contrastive_alignment_reaches_the_scoring_projections(tmp_path):
    m = model_from(
        tmp_path,
        [
            *PAIRWISE,
            "loss=bce_contrastive",
            "loss.alpha=1.0",
            "fusion=concat",
            "model.prototypes=0",
        ],
    )
    m.training_step(_batch(), 0).backward()
    assert (
        m.visual_proj[0].weight.grad.abs().sum() > 0 and m.text_proj[0].weight.grad.abs().sum() > 0
    )
    t = m.loss_fn.log_temp
    with torch.no_grad():
        t.fill_(-50.0)
    assert m.loss_fn.temperature.item() == pytest.approx(0.01)


def test_contrastive_needs_both_modalities(tmp_path):
    m = model_from(tmp_path, [*PAIRWISE, "loss=bce_contrastive"], visual=False)
    with pytest.raises(MultirecError, match="needs both a visual and a text"):
        m.training_step(_batch(), 0)


@pytest.mark.parametrize("scoring", [PAIRWISE, TWO_TOWER])
def test_nan_loss_names_the_step(tmp_path, scoring):
    m = model_from(tmp_path, scoring)
    with torch.no_grad():
        (m.head[-1].bias if scoring is PAIRWISE else m.item_bias).fill_(float("nan"))
    with pytest.raises(MultirecError, match="at step 0"):
        m.training_step(_batch(), 0)


def test_feature_dimension_mismatch_is_refused(tmp_path):
    m = model_from(tmp_path, [])
    bad = items()
    bad.visual = torch.zeros(N_ITEMS, DV + 1, dtype=torch.float16)
    with pytest.raises(MultirecError, match="feature dimensions"):
        m.attach_items(bad)


def test_history_token_excludes_the_trained_positive(tmp_path):
    m = model_from(tmp_path, [*PAIRWISE, "fusion=concat"])
    # user 0 trained on items 1, 2, 3: scoring positive 1 must use the mean of items 2 and 3 only
    m.history = sp.csr_matrix(
        (np.ones(3), ([0, 0, 0], [1, 2, 3])), shape=(N_USERS, N_ITEMS), dtype=np.float32
    )
    k = m.user_modalities.index("user_history")
    seen = []
    m._fuse = lambda u, i, b, c, pairwise: seen.append(u[k].view(b, c, -1)) or torch.zeros(b, c)
    m(torch.tensor([0]), torch.tensor([[1, 5]]), exclude_first=True)
    emb = m.item_emb.weight.detach()
    assert torch.allclose(seen[0][0, 0], (emb[2] + emb[3]) / 2, atol=1e-6)
    assert torch.allclose(seen[0][0, 1], (emb[1] + emb[2] + emb[3]) / 3, atol=1e-6)


@pytest.mark.parametrize("prototypes", [0, 4])
def test_two_tower_user_leaves_the_positive_out_of_history_and_profiles(tmp_path, prototypes):
    m = model_from(tmp_path, [*TWO_TOWER, f"model.prototypes={prototypes}"]).eval()
    # user 0 trained on items 1, 2, 3 (all with valid features)
    train = sp.csr_matrix(
        (np.ones(3), ([0, 0, 0], [1, 2, 3])), shape=(N_USERS, N_ITEMS), dtype=np.float32
    )
    m.attach_items(m.items, train)
    toks = dict(
        zip(m.user_modalities, m._user_tokens(torch.tensor([0]), torch.tensor([1])), strict=True)
    )
    emb = m.item_emb.weight.detach()
    assert torch.allclose(toks["user_history"][0], (emb[2] + emb[3]) / 2, atol=1e-6)
    if prototypes:  # the mean of the other items' assignments, mapped as an item's is
        p = m.content_proj  # cover and text share the prototypes
        rest = p.assign(m._reduced("content")[[2, 3]]).mean(0)
        assert torch.allclose(toks["user_content"][0], p.out(rest), atol=1e-5)
    else:  # the other items' mean features, projected as an item's are
        rest = m.items.visual[[2, 3]].float().mean(0)
        assert torch.allclose(toks["user_visual"][0], m.visual_proj(rest), atol=1e-2)
