"""Two-tower scoring at PixelRec50K scale (``python -m multirec.bench.two_tower [users=N]``).

Targets on 2 CPU cores: full ranking of every test user (the evaluator's real path: scores,
masking, top-K, metrics) in under 5 minutes, one training epoch in under 2 minutes, peak
RSS under 2 GiB. Features are random, of the real dimensions (EfficientNet-Lite0 1280-d,
MiniLM 384-d), for the 82,865 items of the pixelrec50k sample the training benchmark
prepares; the model is ``conf/train.yaml``'s with ``model.scoring=two_tower``.

Full ranking runs over ``users`` test users (default: all) and is extrapolated to all of them
when fewer are given; the item vectors are computed once per evaluation and reported
apart. Beside it, the same evaluator ranks with a 64-factor dot product (BPR-MF's
scoring) on the same users, the cost two-tower scoring is meant to match. The epoch is
timed over ``STEPS`` batches of the real data module after a warm-up and extrapolated to
the epoch's batch count, with the id embeddings' row updates (the default) and, for
comparison, with dense gradients and AdamW over every row. Each run is a fresh process, so
the peak RSS is its own.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from multirec.bench.common import (
    bench_settings,
    in_subprocess,
    load,
    openmp_env,
    peak_rss_mib,
    write,
)
from multirec.bench.reference import Reference, factor_rows
from multirec.bench.training import CONF, dataset, fit_steps
from multirec.config import build
from multirec.data.dataset import PreparedDataset
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import FullProtocol
from multirec.models.base import Recommender
from multirec.models.items import ItemInputs
from multirec.models.neural import build_model, dataset_sizes
from multirec.runtime import apply_thread_policy
from multirec.runtime.threads import WAIT_POLICY

STEPS = 40
OVERRIDES = ["model.scoring=two_tower", "loss=softmax"]


def dot_product(ds: PreparedDataset, factors: int = 64) -> Recommender:
    """Random ``factors``-wide user and item vectors behind the adapter the reference
    benchmark scores the libraries' factor models with: BPR-MF's scoring cost."""
    rng = np.random.default_rng(0)
    user = rng.standard_normal((ds.n_users, factors), dtype=np.float32)
    item = rng.standard_normal((ds.n_items, factors), dtype=np.float32)
    return Reference(f"{factors}-factor dot product", factor_rows(user, item)).fit(ds)


def random_features(n: int, dim: int, rng: np.random.Generator, block: int = 8192) -> np.ndarray:
    """float16 [n, dim] drawn in blocks, so no float32 copy of the whole table exists."""
    out = np.empty((n, dim), dtype=np.float16)
    for s in range(0, n, block):
        out[s : s + block] = rng.standard_normal((min(block, n - s), dim), dtype=np.float32)
    return out


def random_items(ds: PreparedDataset) -> ItemInputs:
    rng = np.random.default_rng(0)
    n = ds.n_items
    ok = np.ones(n, dtype=bool)
    return ItemInputs.build(
        ds.tag_index(),
        ds.numeric_features(),
        ds.seen_items(),
        (random_features(n, 1280, rng), ok),
        (random_features(n, 384, rng), ok),
    )


def dense_updates(model: Recommender) -> Recommender:
    """``model`` trained as without row updates, for comparison: dense embedding gradients
    and fused AdamW over every row at every step."""
    model.user_emb.sparse = model.item_emb.sparse = False
    model.configure_optimizers = lambda: torch.optim.AdamW(
        model.parameters(), lr=model.hparams.lr, fused=True
    )
    return model


def full_ranking(model: Recommender, ds: PreparedDataset, n_users: int) -> dict:
    """Seconds to rank the whole catalogue for ``n_users`` test users, and extrapolated."""
    everyone = len(np.unique(ds.split("test").users))
    fraction = min(1.0, n_users / everyone)
    t0 = time.perf_counter()
    result = evaluate(model, ds, FullProtocol(user_fraction=fraction), "test")
    seconds = time.perf_counter() - t0
    ranked = result.metrics["test/full/n_users"]
    return {
        "users_ranked": ranked,
        "test_users": everyone,
        "seconds": seconds,
        "seconds_all_test_users": seconds * everyone / ranked,
        "extrapolated": ranked < everyone,
    }


def run(n_users: int | None) -> dict:
    policy = apply_thread_policy()
    load_at_start = load()
    peaks = {"imports": peak_rss_mib()}  # the peak RSS so far, after each phase
    torch.manual_seed(0)
    ds = dataset()
    items = random_items(ds)
    peaks["data_and_features"] = peak_rss_mib()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", OVERRIDES)
    model = build_model(cfg.model, dataset_sizes(ds, items))
    model.attach(ds, items)
    peaks["model"] = peak_rss_mib()
    n_users = n_users or ds.n_users

    # one epoch of the real data module, timed over STEPS batches after a warm-up
    dm = build(cfg.datamodule, dataset=ds)
    positives_per_s, _ = fit_steps(model, dm, STEPS)
    step_s = dm.batch_size / positives_per_s
    batches = len(dm.train_dataloader())
    peaks["training"] = peak_rss_mib()

    model.eval()
    t0 = time.perf_counter()
    model.score_all(torch.tensor([0]))  # fills the item-vector cache
    table_s = time.perf_counter() - t0
    vector_dim = int(model._item_table()[0].shape[1])
    peaks["item_vectors"] = peak_rss_mib()
    two_tower = full_ranking(model, ds, n_users)
    peaks["full_ranking"] = peak_rss_mib()
    reference = full_ranking(dot_product(ds), ds, n_users)
    peaks["reference_ranking"] = peak_rss_mib()
    model.train()  # the comparison below trains the old way, with dense gradients
    dense_step_s = dm.batch_size / fit_steps(dense_updates(model), dm, STEPS)[0]
    return {
        "overrides": OVERRIDES,
        "threads": {**policy.as_dict(), "torch": torch.get_num_threads()},
        "load_at_start": load_at_start,
        "loss": str(cfg.loss._target_).rsplit(".", 1)[-1],
        "fusion": str(cfg.fusion._target_).rsplit(".", 1)[-1],
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "train_interactions": len(ds.train),
        "batch_size": dm.batch_size,
        "num_negatives": dm.num_negatives,
        "vector_dim": vector_dim,
        "train_step_s": step_s,
        "train_step_s_dense_updates": dense_step_s,
        "train_batches_per_epoch": batches,
        "epoch_s_extrapolated": step_s * batches,
        "item_vectors_s": table_s,
        "full_ranking_two_tower": two_tower,
        "full_ranking_dot64_reference": reference,
        "peak_rss_mib": peaks["reference_ranking"],
        "peak_rss_mib_after": peaks,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "run":
        print(json.dumps(run(int(sys.argv[2]) or None)))
        return
    keys = {"users": (0, "test users ranked (0: all), the time extrapolated to all of them")}
    args = bench_settings(sys.argv[1:], keys, __doc__)
    dataset()  # prepare once, outside the measured process
    # OpenMP's waiting is fixed at start-up: the policy's passive waiting, as training runs
    result = in_subprocess(
        "multirec.bench.two_tower", "run", str(args.users), env=openmp_env(WAIT_POLICY)
    )
    write("two_tower", {**result, "load_at_end": load()})


if __name__ == "__main__":
    main()
