"""Prototype projections: k-means finds the clusters the content forms, the start happens once
(a loaded model keeps its trained prototypes), assignments are distributions, and the
two-tower agreement on a prototype side is the topic mixture."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from multirec.errors import ConfigError
from multirec.models import prototypes
from multirec.models.prototypes import PrototypeProjection
from tests.test_model import N_ITEMS, N_USERS, TWO_TOWER, model_from


def clustered(n_per: int = 20, k: int = 3, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` clusters around orthogonal directions with a shared offset (as encoder features
    have: raw cosine between any two items is high) and noise; and each row's cluster."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(k).repeat_interleave(n_per)
    x = torch.eye(dim)[labels] + 1.5 + 0.15 * torch.randn(len(labels), dim, generator=g)
    return x, labels


def test_kmeans_start_finds_the_clusters_and_assignments_are_distributions():
    torch.manual_seed(0)
    x, labels = clustered()
    proj = PrototypeProjection(8, 3, dim=5)
    proj.initialise(x.__getitem__, torch.ones(len(x), dtype=torch.bool))
    a = proj.assign(x)
    assert torch.allclose(a.sum(1), torch.ones(len(x))) and (a >= 0).all()
    nearest = a.argmax(1)
    # every cluster goes to one prototype of its own
    owners = [set(nearest[labels == c].tolist()) for c in range(3)]
    assert all(len(o) == 1 for o in owners) and len(set().union(*owners)) == 3, owners
    assert proj(x).shape == (len(x), 5)


def test_wide_features_are_clustered_on_an_orthonormal_basis_of_their_leading_directions(
    monkeypatch,
):
    monkeypatch.setattr(prototypes, "BASIS_DIM", 5)
    torch.manual_seed(0)
    x, labels = clustered(dim=16)
    proj = PrototypeProjection(16, 3, dim=4)
    assert proj.basis.shape == (16, 5) and proj.centroids.shape == (3, 5)
    proj.initialise(x.__getitem__, torch.ones(len(x), dtype=torch.bool))
    b = proj.basis
    assert torch.allclose(b.T @ b, torch.eye(5), atol=1e-5)
    # the three cluster directions and the shared offset lie in the basis' span
    unit = torch.nn.functional.normalize(x, dim=1)
    assert torch.allclose(unit @ b @ b.T, unit, atol=0.2)
    nearest = proj.assign(proj.reduce(x)).argmax(1)
    owners = [set(nearest[labels == c].tolist()) for c in range(3)]
    assert all(len(o) == 1 for o in owners) and len(set().union(*owners)) == 3, owners


def unit(x: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1) * ok.unsqueeze(1)


@pytest.mark.parametrize("joint", [False, True])
def test_the_models_reduced_features_follow_a_loaded_basis(tmp_path, monkeypatch, joint):
    """Training attaches the items before a resumed or best state is loaded: the features on
    the basis must be those of the basis the model ends up with, not the one it started.
    Joint prototypes see the text and the cover, each of unit length (zero where missing)."""
    monkeypatch.setattr(prototypes, "BASIS_DIM", 4)
    m = model_from(tmp_path, [*TWO_TOWER, "model.prototypes=3", f"model.joint_prototypes={joint}"])
    it = m.items
    side = "content" if joint else "visual"
    feats = (
        torch.cat([unit(it.text, it.text_ok), unit(it.visual, it.visual_ok)], dim=1)
        if joint
        else it.visual.float()
    )
    proj = m._projection(side)
    assert torch.allclose(m._reduced(side), feats @ proj.basis, atol=1e-5)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state[f"{side}_proj.basis"] = torch.linalg.qr(torch.randn(feats.shape[1], 4)).Q
    m.load_state_dict(state)
    assert torch.allclose(m._reduced(side), feats @ state[f"{side}_proj.basis"], atol=1e-5)


def test_random_prototypes_do_not_find_them():
    """The check above can fail: prototypes left at their random start mix the clusters."""
    torch.manual_seed(0)
    x, labels = clustered()
    nearest = PrototypeProjection(8, 3, dim=5).assign(x).argmax(1)
    owners = [set(nearest[labels == c].tolist()) for c in range(3)]
    assert not (all(len(o) == 1 for o in owners) and len(set().union(*owners)) == 3)


def test_the_start_happens_once():
    x, _ = clustered()
    proj = PrototypeProjection(8, 3, dim=5)
    proj.initialise(x.__getitem__, torch.ones(len(x), dtype=torch.bool))
    first = proj.centroids.detach().clone()
    proj.initialise(torch.randn(60, 8).__getitem__, torch.ones(60, dtype=torch.bool))
    assert torch.equal(proj.centroids, first)


def test_fewer_items_than_prototypes_start_as_copies_and_none_is_refused():
    x, _ = clustered(n_per=1)
    proj = PrototypeProjection(8, 5, dim=4)
    proj.initialise(x.__getitem__, torch.ones(len(x), dtype=torch.bool))
    rows = torch.nn.functional.normalize(x, dim=1)
    for c in proj.centroids.detach():
        assert torch.isclose(rows @ c, torch.tensor(1.0), atol=1e-5).any()
    with pytest.raises(ConfigError, match="model.prototypes"):
        PrototypeProjection(8, 3, dim=4).initialise(
            x.__getitem__, torch.zeros(len(x), dtype=torch.bool)
        )


def test_a_loaded_model_keeps_its_prototypes(tmp_path):
    """attach_items starts the prototypes from k-means only in a fresh model: a model built
    from a checkpoint's state keeps the trained ones."""
    overrides = [*TWO_TOWER, "model.prototypes=4"]
    trained = model_from(tmp_path, overrides)
    with torch.no_grad():
        trained.content_proj.centroids.add_(1.0)  # as training moves them
    state = trained.state_dict()
    loaded = model_from(tmp_path, overrides)
    loaded.load_state_dict(state)
    loaded.attach_items(trained.items, trained.profile_history)
    assert torch.equal(loaded.content_proj.centroids, trained.content_proj.centroids)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_prototype_count_is_one_line(tmp_path, bad):
    with pytest.raises(Exception, match=r"model\.prototypes=") as err:
        model_from(tmp_path, [*TWO_TOWER, f"model.prototypes={bad}"])
    assert "\n" not in str(err.value)


def test_log_taste_is_the_log_of_the_smoothed_weighted_share():
    """``log(w * (total + s) / (count + k s) + floor)``, scaled by the strength: for a one-hot
    item the score of its prototype; a user's main category ranks above a minor one, which
    ranks above one they never chose; an empty history is uniform."""
    proj = PrototypeProjection(8, 3, dim=4)
    with torch.no_grad():
        proj.log_weight.copy_(torch.tensor([0.0, 0.5, -0.5]))
        proj.log_strength.fill_(0.3)
    s, floor = proj.log_smoothing.exp(), proj.log_floor.exp()
    total, count = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[3.0]])
    taste = proj.log_taste(total, count).detach()
    w = torch.tensor([0.0, 0.5, -0.5]).exp()
    expected = torch.log(w * (total + s) / (3 + 3 * s) + floor) * torch.tensor(0.3).exp()
    assert torch.allclose(taste, expected.detach(), atol=1e-6)
    with torch.no_grad():
        proj.log_weight.zero_()
    main, minor, never = proj.log_taste(total, count)[0].tolist()
    assert main > minor > never
    empty = proj.log_taste(torch.zeros(1, 3), torch.zeros(1, 1))
    assert torch.allclose(empty, empty[0, :1].expand_as(empty))


def history_model(tmp_path, *overrides: str):
    """A two-tower model with 4 prototypes whose user 0 trained on items 1-6."""
    m = model_from(tmp_path, [*TWO_TOWER, "model.prototypes=4", *overrides])
    train = sp.csr_matrix(
        (np.ones(6), ([0] * 6, [1, 2, 3, 4, 5, 6])), shape=(N_USERS, N_ITEMS), dtype=np.float32
    )
    m.attach_items(m.items, train)
    return m


def test_a_left_out_item_outside_the_history_keeps_the_taste_finite(tmp_path):
    """A random probe batch (the step-time estimate) leaves out items the user never had:
    nothing is taken away, so no share goes below zero and the log stays finite."""
    m = history_model(tmp_path)
    uv, _ = m._user_vectors(torch.tensor([0, 0]), torch.tensor([7, 8]))
    assert torch.isfinite(uv).all()
    history = m._profile_items(torch.tensor([0]), torch.tensor([8]))
    total, count = m._assignment_sum("content", m.content_proj, *history, 1)
    assert count.item() == 6 and (total >= 0).all()


@pytest.mark.parametrize(("joint", "sides"), [(False, ["visual", "text"]), (True, ["content"])])
def test_two_tower_agreement_on_prototype_sides_is_the_topic_mixture(tmp_path, joint, sides):
    """The score's prototype columns are ``sum over sides of q_i . log_taste(user)``, with
    the user's history (positive left out) behind the taste; joint prototypes are one side."""
    k = 4
    overrides = [*TWO_TOWER, f"model.prototypes={k}", f"model.joint_prototypes={joint}"]
    m = model_from(tmp_path, overrides).eval()
    train = sp.csr_matrix(
        (np.ones(3), ([0, 0, 0], [1, 2, 3])), shape=(N_USERS, N_ITEMS), dtype=np.float32
    )
    m.attach_items(m.items, train)
    assert m.mixture_sides == sides
    with torch.no_grad():
        uv, _ = m._user_vectors(torch.tensor([0]), torch.tensor([1]))
        vec, _, _ = m._item_vectors(torch.tensor([5]), torch.tensor([False]))
        expected = torch.tensor(0.0)
        for side in m.mixture_sides:
            p, feats = m._projection(side), m._reduced(side)
            taste = p.log_taste(p.assign(feats[[2, 3]]).sum(0, keepdim=True), torch.tensor([[2.0]]))
            expected = expected + (p.assign(feats[[5]]) * taste).sum()
    width = len(sides) * k
    got = (uv[0, -width:] * vec[0, -width:]).sum()
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)


@pytest.mark.parametrize(("joint", "n_sides"), [(False, 2), (True, 1)])
def test_an_item_without_features_agrees_as_an_even_share_of_every_prototype(
    tmp_path, joint, n_sides
):
    """Item 0 has no valid features: its mixture columns are ``1 / k`` each, so its
    agreement is the user's mean log taste, not 0 (above most items whose topic is known)."""
    k = 4
    overrides = [*TWO_TOWER, f"model.prototypes={k}", f"model.joint_prototypes={joint}"]
    m = model_from(tmp_path, overrides).eval()
    assert not m.items.visual_ok[0] and not m.items.text_ok[0]
    with torch.no_grad():
        uv, _ = m._user_vectors(torch.tensor([1]))
        vec, _, _ = m._item_vectors(torch.tensor([0, 5]), torch.tensor([False, False]))
    width = n_sides * k
    assert torch.equal(vec[0, -width:], torch.full((width,), 1.0 / k))
    assert not torch.allclose(vec[1, -width:], torch.full((width,), 1.0 / k))
    taste = uv[0, -width:]
    assert torch.allclose((taste * vec[0, -width:]).sum(), taste.view(n_sides, k).mean(1).sum())


def audience_model(tmp_path, *overrides: str):
    """A two-tower model with 4 shared prototypes, without dropout or the logQ correction (so
    a training step's logits are the dot products) and with soft assignments, whose user 0 trained on items 1-3 and user 1 on items 1 and 4."""
    quiet = ["model.dropout=0", "model.id_dropout=0", "fusion.dropout=0", "loss.logq=false"]
    settings = ["model.prototypes=4", *quiet, *overrides]
    m = model_from(tmp_path, [*TWO_TOWER, *settings])
    train = sp.csr_matrix(
        (np.ones(5), ([0, 0, 0, 1, 1], [1, 2, 3, 1, 4])),
        shape=(N_USERS, N_ITEMS),
        dtype=np.float32,
    )
    m.attach_items(m.items, train)
    with torch.no_grad():
        m.content_proj.log_scale.zero_()  # soft assignments, which an audience visibly moves
    return m


def test_an_items_audience_weighs_on_its_assignment_without_the_positives_own_user(tmp_path):
    """An item's assignment is ``softmax(content logits + w * mean log taste of its training
    users)``: item 1 hears users 0 and 1, item 4 user 1, item 5 nobody (its content alone),
    and a user left out (a training positive's own) is not heard; an item standing for an
    unseen one hears nobody. With a loud audience the item takes its audience's prototype."""
    m = audience_model(tmp_path).eval()
    proj = m.content_proj
    assert m.items.visual_ok[1:6].all() and m.items.text_ok[1:6].all()

    def assigned(items, unseen, without=None) -> torch.Tensor:
        got: dict[str, torch.Tensor] = {}
        m._item_tokens(torch.tensor(items), torch.tensor(unseen), got, without)
        return got["content"]

    with torch.no_grad():
        logits = proj.logits(m._reduced("content"))
        q = logits.softmax(1)
        taste = proj.log_taste(
            torch.stack([q[[1, 2, 3]].sum(0), q[[1, 4]].sum(0)]), torch.tensor([[3.0], [2.0]])
        )
        w = m.audience_weight

        def heard(item: int, users: list[int]) -> torch.Tensor:
            return (logits[item] + w * taste[users].mean(0)).softmax(0)

        got = assigned([1, 4, 5], [False] * 3)
        for row, expected in zip(got, (heard(1, [0, 1]), heard(4, [1]), q[5]), strict=True):
            assert torch.allclose(row, expected, atol=1e-6)
        assert not torch.allclose(got[0], q[1], atol=1e-3)  # the audience does move it
        got = assigned([1, 1, 4], [False] * 3, torch.tensor([0, -1, 1]))
        assert torch.allclose(got[0], heard(1, [1]), atol=1e-6)
        assert torch.allclose(got[1], heard(1, [0, 1]), atol=1e-6)
        assert torch.allclose(got[2], q[4], atol=1e-6)  # its one user left out: content alone
        assert torch.allclose(assigned([1], [True])[0], q[1], atol=1e-6)
        m.audience_weight.fill_(100.0)
        m._table = None
        assert assigned([1], [False])[0].argmax() == taste[[0, 1]].mean(0).argmax()


def test_a_training_positive_is_scored_without_its_own_user_in_its_audience(tmp_path):
    """The step scores user 0's positive item 1 as if user 0 had never chosen it (its
    audience user 1 alone), while item 4, a negative, keeps its whole audience."""
    m = audience_model(tmp_path).train()
    users, pos, neg = torch.tensor([0]), torch.tensor([1]), torch.tensor([[4]])
    with torch.no_grad():
        pos_logit, neg_logits, _, _ = m._two_tower_step(users, pos, neg)
        uv, _ = m._user_vectors(users, pos)
        seen = torch.tensor([False])
        vec, bias, _ = m._item_vectors(pos, seen, users)
        assert torch.allclose(pos_logit, (uv * vec).sum(1) + bias, atol=1e-5)
        whole, bias, _ = m._item_vectors(pos, seen)
        assert not torch.allclose(pos_logit, (uv * whole).sum(1) + bias, atol=1e-4)
        vec, bias, _ = m._item_vectors(neg[0], seen)
        assert torch.allclose(neg_logits[0, 0], (uv * vec).sum(1)[0] + bias[0], atol=1e-5)


def test_evaluation_hears_the_audience_of_the_weights_after_a_training_step(tmp_path):
    """A fused optimiser steps without bumping the weights' version counters: the training
    step's start must drop the tastes evaluation computed, or validation after it would rank
    with the audience of the weights before it."""
    m = audience_model(tmp_path).eval()
    with torch.no_grad():
        before = m._audience("content", m.content_proj)[0].clone()
        # as a fused step writes: in place, no version bump
        m.content_proj.log_weight.data.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
        m.on_train_batch_start(None, 0)
        after = m._audience("content", m.content_proj)[0]
        assert torch.allclose(after, m._tastes("content", m.content_proj)[0])
    assert not torch.allclose(before, after, atol=1e-3)


def test_the_audience_needs_two_tower_scoring_and_prototypes(tmp_path):
    """Pairwise scoring and MLP projections have no assignment to weigh: no weight at all."""
    assert audience_model(tmp_path).audience_weight is not None
    assert audience_model(tmp_path, "model.audience=false").audience_weight is None
    assert model_from(tmp_path, [*TWO_TOWER, "model.prototypes=0"]).audience_weight is None
    pairwise = ["model.scoring=pairwise", "loss=bce", "model.prototypes=4"]
    assert model_from(tmp_path, pairwise).audience_weight is None
