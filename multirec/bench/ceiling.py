"""How close the models come to the best ranking a synthetic sample allows
(``python -m multirec.bench.ceiling [data=small] [runs=outputs/tune/<dir>/final]``).

A synthetic sample is drawn from a known process (:mod:`multirec.data.synthetic`): a user's
interactions fall, 85 % of the time, in one of their preferred topics, with weights the
generator draws, and within a topic an item is taken in proportion to its popularity; the
rest is popularity-driven noise. The ranking the generator itself implies is therefore
known: models can approach it, not beat it beyond chance. Two oracles score with it,
through the evaluator, on the same saved test lists as every model:

* **taste oracle** -- the users' true topic weights and every item's true topic: the ranking
  the generator would make, short only of the true popularities (training counts stand in:
  the true ones would contain the test positives). Nothing in the training data tells a
  model these tastes exactly, so no model is expected to reach it;
* **topic oracle** -- every item's true topic, and each user's topic weights estimated from
  their training interactions (counts plus ``smoothing``, chosen on the valid split). What a
  model that recovered every item's topic from its content, and nothing else, would reach
  from the same training data as the models.

With ``runs`` (a folder of runs, e.g. a tuned contest's ``final``), every table row there
scored on the same test lists is tested against the topic oracle on per-list NDCG@10 and
Recall@20 (paired, as :mod:`multirec.reporting` does): how far below what the data allows
each model sits, and whether the gap is larger than chance. Results:
``outputs/bench/ceiling.json``.
"""

from __future__ import annotations

# first: it sets OpenMP's environment, which torch reads once when the imports below load it
from multirec.runtime import apply_thread_policy

# isort: split
import sys
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from multirec.bench.common import bench_settings, write
from multirec.bench.training import CONF
from multirec.cli import user_errors
from multirec.config import build, project_root
from multirec.data.dataset import PreparedDataset
from multirec.data.synthetic import read_world
from multirec.data.synthetic.interactions import IN_TOPIC_SHARE
from multirec.errors import MultirecError
from multirec.eval.evaluator import EvalResult, evaluate, write_lists
from multirec.models.base import Recommender, Validation
from multirec.pipeline.stages import ensure_prepared
from multirec.reporting.runs import Entry, collect
from multirec.reporting.significance import paired_test
from multirec.reporting.tables import Row, aggregate

OUT = Path("outputs/bench/ceiling")
SMOOTHING = [0.0, 0.1, 0.25, 0.5, 1.0]  # pseudo-counts per topic tried on the valid split
METRICS = ["ndcg@10", "recall@20"]


class TopicOracle(Recommender):
    """Scores as the generator draws: ``s * w_u[t_i] * c_i / C[t_i] + (1 - s) * c_i / N``.

    ``t_i`` is item i's true topic, ``c_i`` its training count, ``C[t]`` the training count of
    topic t and ``N`` of all; ``s`` the generator's in-topic share. ``w_u`` is the user's true
    topic weights when given (``taste``), else their training counts per topic plus
    ``smoothing``, normalised.
    """

    def __init__(
        self, item_topic: np.ndarray, taste: np.ndarray | None = None, smoothing: float = 0.0
    ) -> None:
        self.item_topic = item_topic
        self.taste = taste
        self.smoothing = smoothing

    @property
    def name(self) -> str:
        return "taste oracle" if self.taste is not None else f"topic oracle ({self.smoothing:g})"

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        train = dataset.interaction_matrix("train")
        counts = np.asarray(train.sum(axis=0)).ravel()
        n_topics = int(self.item_topic.max()) + 1
        one_hot = np.eye(n_topics)[self.item_topic]
        if self.taste is None:
            weights = train @ one_hot + self.smoothing
            weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        else:
            weights = self.taste
        topic_counts = one_hot.T @ counts
        within = counts / np.maximum(topic_counts[self.item_topic], 1.0)
        self.weights = torch.from_numpy(weights.astype(np.float64))
        self.in_topic = torch.from_numpy(IN_TOPIC_SHARE * one_hot.T * within[None, :])
        self.noise = torch.from_numpy((1 - IN_TOPIC_SHARE) * counts / max(counts.sum(), 1.0))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return (self.weights[users.cpu()] @ self.in_topic + self.noise).float()

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.score_all(users), 1, items.cpu())


def latent(dataset: PreparedDataset) -> tuple[np.ndarray, np.ndarray]:
    """Every item's true topic and every user's true topic weights, in the dataset's order,
    from the world of the sample it was prepared from."""
    root = Path(dataset.manifest["inputs"]["root"])
    world = read_world(root)
    item_row = {item: k for k, item in enumerate(world.item_ids.tolist())}
    user_row = {user: k for k, user in enumerate(world.user_ids.tolist())}
    try:
        items = np.array([item_row[i] for i in dataset.item_ids])
        users = np.array([user_row[u] for u in dataset.user_ids])
    except KeyError as exc:
        raise MultirecError(
            f"{dataset.root}: id {exc.args[0]} is not in the sample at {root}; prepare it again"
        ) from None
    return world.item_topic[items], world.user_topic_weights[users]


@user_errors
def main() -> None:
    args = bench_settings(
        sys.argv[1:],
        {
            "data": ("small", "the synthetic sample (a conf/data name whose data.sample is set)"),
            "runs": ("", "a folder of runs to test against the topic oracle (empty: none)"),
        },
        __doc__,
    )
    apply_thread_policy()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        # the run directory's root is a Hydra runtime value, which compose() does not set
        root = project_root()
        cfg = compose("evaluate", [f"data={args.data}", "protocol=full", f"paths.root_dir={root}"])
    dataset = ensure_prepared(cfg.data, cfg.paths)
    topic, taste = latent(dataset)
    protocol, metrics = build(cfg.protocol), build(cfg.eval)

    def scored(model: Recommender, split: str) -> EvalResult:
        return evaluate(model.fit(dataset), dataset, protocol, split, metrics=metrics)

    valid = {s: scored(TopicOracle(topic, smoothing=s), "valid") for s in SMOOTHING}
    best = max(SMOOTHING, key=lambda s: valid[s].metrics["valid/full/ndcg@10"])
    oracles = {"taste": TopicOracle(topic, taste), "topic": TopicOracle(topic, smoothing=best)}
    tested = {k: scored(m, "test") for k, m in oracles.items()}
    results: dict = {
        "dataset": {"name": cfg.data.name, "fingerprint": dataset.fingerprint},
        "topic_oracle_smoothing": {
            "chosen": best,
            "valid_ndcg@10": {str(s): r.metrics["valid/full/ndcg@10"] for s, r in valid.items()},
        },
        "test": {
            k: {m: r.metrics[f"test/full/{m}"] for m in [*METRICS, "mrr@10", "n_lists"]}
            for k, r in tested.items()
        },
    }
    if args.runs:
        results["against_topic_oracle"] = against(tested["topic"], oracles["topic"].name, args.runs)
    write("ceiling", results)


def against(oracle: EvalResult, label: str, runs: str) -> dict:
    """Every row under ``runs`` scored on the test lists, paired-tested against ``oracle``."""
    write_lists([oracle], OUT)
    entry = Entry(
        "baseline", label, {}, 0, "", lists={("test", "full"): OUT / "lists-test-full.parquet"}
    )
    ceiling = Row(label, "baseline", {}, [entry], {}, oracle.metrics["test/full/n_lists"])
    rows = aggregate(collect(runs).entries, "test", "full")
    if not rows:
        raise MultirecError(f"runs={runs}: no run there was tested under full ranking")
    out = {}
    for row in rows:
        tests = {m: paired_test(ceiling, row, "test", "full", m) for m in METRICS}
        out[row.label] = {
            m: t
            if isinstance(t, str)
            else {
                "row": t.mean_b,
                "oracle": t.mean_a,
                "gap": t.diff,
                "ci95": [t.ci_low, t.ci_high],
                "t_pvalue": t.t_pvalue,
                "wilcoxon_pvalue": t.wilcoxon_pvalue,
            }
            for m, t in tests.items()
        }
    return out


if __name__ == "__main__":
    main()
