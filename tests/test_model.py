"""The neural recommender: the configured fusion runs, switched-off modalities have no
parameters, losses behave, and bad training states stop with a named step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multirec.errors import MultirecError
from multirec.models import fusion as F
from multirec.models.items import ItemInputs
from multirec.models.neural import build_model
from multirec.models.recommender import MultimodalRecommender
from tests.conftest import compose_cfg

N_USERS, N_ITEMS, N_TAGS, DV, DT = 7, 11, 3, 12, 8


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
    import scipy.sparse as sp

    train = sp.csr_matrix(
        (np.ones(N_USERS), (np.arange(N_USERS), np.arange(N_USERS))), shape=(N_USERS, N_ITEMS)
    )
    m.attach_items(items(visual, text), train)
    return m


@pytest.mark.parametrize(
    ("name", "cls"),
    [("concat", F.ConcatFusion), ("gated", F.GatedFusion), ("attention", F.AttentionFusion)],
)
def test_configured_fusion_is_the_one_that_runs(tmp_path, name, cls):
    m = model_from(tmp_path, [f"fusion={name}"])
    assert type(m.fusion) is cls
    calls = []
    m.fusion.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    users = torch.tensor([0, 1, 2])
    out = m(users, torch.tensor([[0, 1, 2, 3]] * 3))
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    assert calls == [torch.Size([12, len(m.modalities), 64])]
    # full-catalogue scoring (item tokens shared across users) agrees with per-list scoring
    full = m.score_all(users)
    lists = m.score(users, torch.arange(N_ITEMS).expand(3, -1))
    assert torch.allclose(full, lists, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls", "flatten"])
def test_attention_pooling_options(tmp_path, pooling):
    m = model_from(tmp_path, ["fusion=attention", f"fusion.pooling={pooling}", "fusion.layers=2"])
    w = m.modality_weights(torch.tensor([0, 1]), torch.tensor([[1, 2], [3, 4]]))
    assert w.shape == (2, 2, len(m.modalities))
    assert torch.allclose(w.sum(-1), torch.ones(2, 2), atol=1e-5)


def test_switched_off_modalities_have_no_parameters(tmp_path):
    text_only = model_from(tmp_path, [], visual=False)
    assert "visual" not in text_only.modalities and not hasattr(text_only, "visual_proj")
    assert not any("visual" in n for n, _ in text_only.named_parameters())
    visual_only = model_from(tmp_path, [], text=False)
    assert "text" not in visual_only.modalities and not hasattr(visual_only, "text_proj")
    no_ids = model_from(tmp_path, ["model.use_ids=false"])
    assert not hasattr(no_ids, "user_emb") and not hasattr(no_ids, "item_emb")
    assert no_ids.user_modalities == ["user_visual", "user_text"]
    out = no_ids(torch.tensor([0, 1]), torch.tensor([[9, 10], [9, 10]]))
    assert torch.isfinite(out).all()
    paper = model_from(tmp_path, ["model.user_profile=false"])
    assert paper.modalities == ["user", "item", "visual", "text", "tag", "numeric"]
    with pytest.raises(MultirecError, match="no user-side token"):
        model_from(tmp_path, ["model.use_ids=false", "model.user_profile=false"])


def test_user_profiles_are_mean_features_of_valid_training_items(tmp_path):
    m = model_from(tmp_path, [])
    feats = m.items.visual.float()
    # user 0 trained on item 0 only, whose features are invalid: zero profile
    assert torch.allclose(m.profiles["visual"][0].float(), torch.zeros(DV))
    assert torch.allclose(m.profiles["visual"][3].float(), feats[3], atol=1e-2)


def test_cold_items_use_shared_vector(tmp_path):
    m = model_from(tmp_path, ["fusion=concat"]).eval()
    # items 9 and 10 have no training interactions: their id token is the shared one
    toks = m._item_tokens(torch.tensor([9, 10]))
    assert torch.equal(toks[0][0], toks[0][1])
    assert torch.equal(toks[0][0], m.unseen_item.detach())


def _batch():
    return (
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([[5, 6], [6, 7], [7, 8], [8, 5]]),
    )


@pytest.mark.parametrize("loss", ["bce", "bpr", "bce_contrastive"])
def test_losses_train(tmp_path, loss):
    m = model_from(tmp_path, [f"loss={loss}", "fusion=concat"])
    m.log = m.log_dict = lambda *a, **k: None
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        opt.zero_grad()
        value = m.training_step(_batch(), 0)
        value.backward()
        opt.step()
        first = first if first is not None else value.item()
    assert value.item() < first


def test_contrastive_alignment_reaches_the_scoring_projections(tmp_path):
    m = model_from(tmp_path, ["loss=bce_contrastive", "loss.alpha=1.0", "fusion=concat"])
    m.log = m.log_dict = lambda *a, **k: None
    m.training_step(_batch(), 0).backward()
    assert (
        m.visual_proj[0].weight.grad.abs().sum() > 0 and m.text_proj[0].weight.grad.abs().sum() > 0
    )
    t = m.loss_fn.log_temp
    with torch.no_grad():
        t.fill_(-50.0)
    assert m.loss_fn.temperature.item() == pytest.approx(0.01)


def test_contrastive_needs_both_modalities(tmp_path):
    m = model_from(tmp_path, ["loss=bce_contrastive"], visual=False)
    m.log = m.log_dict = lambda *a, **k: None
    with pytest.raises(MultirecError, match="needs both a visual and a text"):
        m.training_step(_batch(), 0)


def test_nan_loss_names_the_step(tmp_path):
    m = model_from(tmp_path, [])
    m.log = m.log_dict = lambda *a, **k: None
    with torch.no_grad():
        m.head[-1].bias.fill_(float("nan"))
    with pytest.raises(MultirecError, match="at step 0"):
        m.training_step(_batch(), 0)


def test_feature_dimension_mismatch_is_refused(tmp_path):
    m = model_from(tmp_path, [])
    bad = items()
    bad.visual = torch.zeros(N_ITEMS, DV + 1, dtype=torch.float16)
    with pytest.raises(MultirecError, match="feature dimensions"):
        m.attach_items(bad)


def test_history_token_excludes_the_trained_positive(tmp_path):
    import scipy.sparse as sp

    m = model_from(tmp_path, ["fusion=concat"])
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
