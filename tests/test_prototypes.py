"""Prototype projections: k-means finds the clusters the content forms, the start happens once
(a loaded model keeps its trained prototypes), and assignments are distributions."""

from __future__ import annotations

import pytest
import torch

from multirec.errors import ConfigError
from multirec.models.prototypes import PrototypeProjection
from tests.test_model import TWO_TOWER, model_from


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
    proj.initialise(x, torch.ones(len(x), dtype=torch.bool))
    a = proj.assign(x)
    assert torch.allclose(a.sum(1), torch.ones(len(x))) and (a >= 0).all()
    nearest = a.argmax(1)
    # every cluster goes to one prototype of its own
    owners = [set(nearest[labels == c].tolist()) for c in range(3)]
    assert all(len(o) == 1 for o in owners) and len(set().union(*owners)) == 3, owners
    assert proj(x).shape == (len(x), 5)


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
    proj.initialise(x, torch.ones(len(x), dtype=torch.bool))
    first = proj.centroids.detach().clone()
    proj.initialise(torch.randn(60, 8), torch.ones(60, dtype=torch.bool))
    assert torch.equal(proj.centroids, first)


def test_fewer_items_than_prototypes_start_as_copies_and_none_is_refused():
    x, _ = clustered(n_per=1)
    proj = PrototypeProjection(8, 5, dim=4)
    proj.initialise(x, torch.ones(len(x), dtype=torch.bool))
    rows = torch.nn.functional.normalize(x, dim=1)
    for c in proj.centroids.detach():
        assert torch.isclose(rows @ c, torch.tensor(1.0), atol=1e-5).any()
    with pytest.raises(ConfigError, match="model.prototypes"):
        PrototypeProjection(8, 3, dim=4).initialise(x, torch.zeros(len(x), dtype=torch.bool))


def test_a_loaded_model_keeps_its_prototypes(tmp_path):
    """attach_items starts the prototypes from k-means only in a fresh model: a model built
    from a checkpoint's state keeps the trained ones."""
    overrides = [*TWO_TOWER, "model.prototypes=4"]
    trained = model_from(tmp_path, overrides)
    with torch.no_grad():
        trained.visual_proj.centroids.add_(1.0)  # as training moves them
    state = trained.state_dict()
    loaded = model_from(tmp_path, overrides)
    loaded.load_state_dict(state)
    loaded.attach_items(trained.items, trained.profile_history)
    assert torch.equal(loaded.visual_proj.centroids, trained.visual_proj.centroids)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_prototype_count_is_one_line(tmp_path, bad):
    with pytest.raises(Exception, match=r"model\.prototypes=") as err:
        model_from(tmp_path, [*TWO_TOWER, f"model.prototypes={bad}"])
    assert "\n" not in str(err.value)
