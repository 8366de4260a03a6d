"""The thread policy's choices, the batch-norm folding of frozen encoders, and the refusal of a
full-ranking evaluation estimated to take too long (speed itself is measured in benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from multirec.errors import ConfigError
from multirec.runtime import choose_policy, model_threads, timing
from multirec.runtime import threads as threads_mod
from multirec.runtime.inference import fold_batchnorm


@pytest.mark.parametrize(
    ("cores", "device", "torch_n", "workers", "beside"),
    [
        (1, "cpu", 1, 0, 1),  # one core: no worker to take turns with the model
        (2, "cpu", 2, 1, 2),  # one worker decodes ahead; the model keeps both cores
        (16, "cpu", 16, 1, 16),
        (16, "cuda", 16, 15, 9),  # the GPU computes: workers get the cores
    ],
)
def test_automatic_choices_never_oversubscribe(cores, device, torch_n, workers, beside):
    policy = choose_policy(cores, device=device)
    assert (policy.torch, policy.workers, policy.torch_beside(policy.workers)) == (
        torch_n,
        workers,
        beside,
    )
    assert policy.torch_beside(policy.workers) + policy.workers // 2 <= cores


def test_config_overrides_win_and_bad_values_are_named():
    policy = choose_policy(2, torch=1, workers=4)
    assert (policy.torch, policy.workers, policy.torch_beside(4)) == (1, 4, 1)
    assert choose_policy(8, workers=4).torch_beside(4) == 6
    with pytest.raises(ConfigError, match="threads.torch"):
        choose_policy(2, torch=0)
    with pytest.raises(ConfigError, match="threads.workers"):
        choose_policy(2, workers="two")


def test_cores_follow_the_cgroup_quota_and_the_processes_beside(monkeypatch):
    monkeypatch.setattr(threads_mod.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads_mod, "_cgroup_cpus", lambda: None)
    assert threads_mod.available_cores() == 4
    monkeypatch.setattr(threads_mod, "_cgroup_cpus", lambda: 2)
    assert threads_mod.available_cores() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc-per-node=4
    assert threads_mod.available_cores() == 1


def test_model_threads_are_restored(monkeypatch):
    monkeypatch.setattr(threads_mod, "_current", choose_policy(4, torch=3))
    before = torch.get_num_threads()
    with model_threads(1) as n:
        assert n == torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


def test_entry_points_set_openmp_wait_before_torch_loads():
    code = (
        "import os, sys; import multirec.train; "
        "assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE', os.environ.get('OMP_WAIT_POLICY')"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn2(self.dw(self.bn(self.conv(x))))).mean((2, 3))


def test_folding_batch_norm_keeps_the_outputs():
    torch.manual_seed(0)
    net = _Block().eval()
    for bn in (net.bn, net.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    x = torch.randn(4, 3, 16, 16)
    folded = fold_batchnorm(net, x[:1])
    assert folded is not net and isinstance(folded.bn, nn.Identity)
    assert isinstance(net.bn, nn.BatchNorm2d)  # the original is left as it was
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)


def test_a_conv_output_used_elsewhere_is_not_folded():
    class Skip(_Block):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return (self.bn(y) + y).mean((2, 3))

    net = Skip().eval()
    net.bn.running_mean.fill_(0.5)
    assert fold_batchnorm(net, torch.randn(1, 3, 8, 8)) is net


class _Scorer(nn.Module):
    """The parts of a neural recommender the time estimates use."""

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.u, self.i = nn.Embedding(n_users, 4), nn.Embedding(n_items, 4)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (self.u(users).unsqueeze(1) * self.i(items)).sum(-1)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        users, pos, neg = batch
        return (self.u(users) * self.i(pos)).sum() - (self.u(users)[:, None] * self.i(neg)).sum()


def test_a_too_long_full_ranking_is_refused_naming_the_settings(tiny_prepared):
    from types import SimpleNamespace

    from multirec.eval.protocols import FullProtocol
    from multirec.pipeline.estimates import check_step_times

    ds = tiny_prepared
    model = _Scorer(ds.n_users, ds.n_items)
    state = torch.get_rng_state()
    evaluation = SimpleNamespace(
        dataset=ds, protocols={"full": FullProtocol()}, valid_protocol="full"
    )
    datamodule = SimpleNamespace(batch_size=8, num_negatives=2)
    estimates = check_step_times(model, datamodule, evaluation, True, 1.0, False)
    assert [e.step.split()[:2] for e in estimates] == [
        ["training", "epoch"],
        ["valid", "full"],
        ["test", "full"],
    ]
    assert torch.equal(torch.get_rng_state(), state)  # a seeded run trains as without them
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError, match=r"protocols\.full\.user_fraction=.*allow_long=true"):
        check_step_times(model, datamodule, evaluation, True, 1e-9, False)
    check_step_times(model, datamodule, evaluation, True, 1e-9, True)


def test_progress_bars_appear_only_on_long_steps(monkeypatch, capsys):
    assert list(timing.progress(range(3), "quick step", "item")) == [0, 1, 2]
    assert "quick step" not in capsys.readouterr().err
    monkeypatch.setattr(timing, "PROGRESS_DELAY_S", 0.05)
    for _ in timing.progress(range(3), "long step", "item"):
        time.sleep(0.15)
    assert "long step" in capsys.readouterr().err
