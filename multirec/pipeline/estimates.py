"""How long a long step will take, measured before it starts, and a stop before a job of days.

At PixelRec50K scale one default ``make train`` would rank the whole catalogue for every
test user with the pairwise model: 50,000 x 83,000 scores, 35-80 hours on two cores,
started silently after training. So before fitting, :func:`check_step_times` times the
model on one batch of the sizes at hand and logs what an epoch, a validation pass and each
full-ranking evaluation will take; a full-ranking evaluation estimated above
``long_step_hours`` stops the run with one line naming the setting that shortens it (the
protocol's ``user_fraction``) and the one that runs it anyway (``allow_long=true``).

The measurements leave no trace: the model is put back in its mode, its gradients are
cleared and torch's random state is restored, so a run with a given seed trains exactly
as it would without them.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError
from multirec.eval.callback import RankingEvaluation
from multirec.eval.candidates import CandidateLists
from multirec.eval.protocols import FullRankingTargets, Protocol
from multirec.runtime.timing import format_duration

log = logging.getLogger(__name__)

PROBE_SCORES = 1 << 16  # scores per timed probe call: a second or two at PixelRec50K scale
FULL_PROBE_ITEMS = 2048  # catalogue items every full-ranking probe user is scored against
WORTH_TELLING_S = 60.0  # a shorter step's estimate goes to the log file only


@dataclass(frozen=True)
class Estimate:
    """``work`` units of a step at a measured ``rate`` (units per second)."""

    step: str
    work: int
    unit: str
    rate: float

    @property
    def seconds(self) -> float:
        return self.work / max(self.rate, 1e-12)

    def __str__(self) -> str:
        return (
            f"{self.step}: {self.work:,} {self.unit}, about {format_duration(self.seconds)} "
            f"at {self.rate:,.0f} {self.unit}/s"
        )


def _timed_scores(model: Any, users: torch.Tensor, items: torch.Tensor) -> float:
    """Scores per second of ``model.score(users, items)``, after a small warm-up call."""
    model.score(users[:2], items[:2])  # first call: kernels chosen
    t0 = time.perf_counter()
    model.score(users, items)
    return items.numel() / max(time.perf_counter() - t0, 1e-9)


def full_ranking_rate(model: Any, n_users: int, n_items: int) -> float:
    """Scores/s when many users are scored against the same items, so that item-side work
    is shared between them as when a whole catalogue is ranked."""
    width = min(n_items, FULL_PROBE_ITEMS)
    users = torch.arange(max(1, PROBE_SCORES // width)) % n_users
    return _timed_scores(model, users, torch.arange(width).expand(len(users), -1))


def list_rate(model: Any, n_users: int, n_items: int, width: int) -> float:
    """Scores/s of candidate lists of ``width`` items, drawn independently per list."""
    gen = torch.Generator().manual_seed(0)
    users = torch.arange(max(2, PROBE_SCORES // width)) % n_users
    return _timed_scores(model, users, torch.randint(n_items, (len(users), width), generator=gen))


def training_rate(model: Any, n_users: int, n_items: int, batch_size: int, negatives: int) -> float:
    """Training positives per second of a forward and backward pass on one random batch
    (without the optimiser step); the model's random state, mode and gradients are kept."""
    gen = torch.Generator().manual_seed(0)
    batch = (
        torch.randint(n_users, (batch_size,), generator=gen),
        torch.randint(n_items, (batch_size,), generator=gen),
        torch.randint(n_items, (batch_size, negatives), generator=gen),
    )
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log() outside a Trainer: nothing to log to
            model.training_step(batch, 0).backward()  # first call: kernels chosen
            t0 = time.perf_counter()
            model.training_step(batch, 0).backward()
            seconds = time.perf_counter() - t0
    finally:
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
    return batch_size / max(seconds, 1e-9)


def _round_down(x: float) -> float:
    """``x`` rounded down to two significant digits (a share to suggest)."""
    step = 10.0 ** (math.floor(math.log10(x)) - 1)
    return round(math.floor(x / step) * step, 12)


def evaluation_estimate(
    model: Any, protocol: Protocol, name: str, dataset: PreparedDataset, split: str
) -> Estimate:
    """One evaluation of ``split`` under ``protocol`` (config name ``name``), rate measured."""
    n_users, n_items = dataset.n_users, dataset.n_items
    lists = protocol.lists(dataset, split)
    if isinstance(lists, FullRankingTargets):
        users = len(lists.users)
        step = f"{split} {name} ranking ({users:,} users x {n_items:,} items)"
        return Estimate(step, users * n_items, "scores", full_ranking_rate(model, n_users, n_items))
    assert isinstance(lists, CandidateLists)
    n, width = lists.items.shape
    rate = list_rate(model, n_users, n_items, width)
    return Estimate(f"{split} {name} ({n:,} lists of {width})", n * width, "scores", rate)


def check_step_times(
    model: Any,
    datamodule: Any,
    evaluation: RankingEvaluation,
    test: bool,
    long_step_hours: float,
    allow_long: bool,
) -> list[Estimate]:
    """Log how long a training epoch, validation and each test evaluation will take; refuse
    a full-ranking evaluation estimated above ``long_step_hours`` unless ``allow_long``.

    ``datamodule`` gives the training batch (``batch_size``, ``num_negatives``) and
    ``evaluation`` the dataset and the protocols the run will evaluate.
    """
    dataset, protocols = evaluation.dataset, evaluation.protocols
    rate = training_rate(
        model, dataset.n_users, dataset.n_items, datamodule.batch_size, datamodule.num_negatives
    )
    runs = [("valid", evaluation.valid_protocol)]
    runs += [("test", name) for name in protocols] if test else []
    estimates = [Estimate("training epoch", len(dataset.train), "positives", rate)]
    estimates += [evaluation_estimate(model, protocols[n], n, dataset, s) for s, n in runs]
    for e in estimates:
        tell(e)
    for (split, name), e in zip(runs, estimates[1:], strict=True):
        refuse_long(
            e, protocols[name], f"protocols.{name}", dataset, split, long_step_hours, allow_long
        )
    return estimates


def tell(estimate: Estimate) -> None:
    """Log ``estimate``: on the terminal when the step is long enough to matter, else in
    the run's log file only."""
    level = logging.INFO if estimate.seconds >= WORTH_TELLING_S else logging.DEBUG
    log.log(level, "estimate: %s", estimate)


def refuse_long(
    estimate: Estimate,
    protocol: Protocol,
    key: str,
    dataset: PreparedDataset,
    split: str,
    long_step_hours: float,
    allow_long: bool,
) -> None:
    """Refuse a full-ranking evaluation estimated above ``long_step_hours`` unless
    ``allow_long``, naming the share of users that fits (``key``: the protocol's config
    node): a job of days never starts quietly."""
    if not isinstance(protocol.lists(dataset, split), FullRankingTargets):
        return
    if estimate.seconds > long_step_hours * 3600 and not allow_long:
        share = _round_down(protocol.user_fraction * long_step_hours * 3600 / estimate.seconds)
        raise ConfigError(
            f"the full-ranking {split} evaluation would take about "
            f"{format_duration(estimate.seconds)} ({estimate.work:,} scores at "
            f"{estimate.rate:,.0f}/s measured here), over long_step_hours={long_step_hours:g}: "
            f"rank for a share of the users with {key}.user_fraction={share:g}, or run it "
            "anyway with allow_long=true"
        )
