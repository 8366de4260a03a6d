"""Evaluation benchmark at PixelRec50K scale (``python -m multirec.bench.evaluation``).

Full-ranking evaluation of BPR-MF and ItemKNN over every test user through the batched
evaluator, against a straightforward per-user Python loop in the same run (timed on a
fixed random subset of users and checked to give the same metrics there); sampled-protocol
throughput too. Uses a prepared ``pixelrec50k`` sample when one exists under
``outputs/prepared`` (``make bench`` prepares one), otherwise a random prepared dataset of that size (50,000 users,
82,865 items, about 990,000 interactions, long-tailed item popularity, 70/15/15 per-user
split), written by :func:`synthetic_prepared`. Results: ``outputs/bench/evaluation.json``,
with the thread policy it ran under and the load average.
"""

from __future__ import annotations

# first: it sets OpenMP's environment, which torch reads once when the imports below load it
from multirec.runtime import apply_thread_policy

# isort: split
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from multirec.baselines.bprmf import BPRMF
from multirec.baselines.knn import ItemKNN
from multirec.bench.common import bench_settings, load, peak_rss_mib, timed, write
from multirec.data.dataset import MANIFEST, SPLITS, PreparedDataset
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import FullProtocol, FullRankingTargets, SampledProtocol
from multirec.io import atomic_dir, atomic_write_json, fingerprint
from multirec.models.base import Recommender, mask_excluded

PREPARED = Path("outputs/prepared")
SYNTHETIC = Path("outputs/bench/synthetic_pixelrec50k")


def write_prepared(
    root: Path,
    n_users: int,
    n_items: int,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    tags: np.ndarray | None = None,
) -> PreparedDataset:
    """Write a minimal prepared directory (dataset.py's contract) from index arrays per split.

    For benchmarks and tests that need exact control over who interacted with what (users
    without training history, items never trained on). Item text is empty, covers absent,
    no numeric columns; ``tags`` (int per item, 0 = rare/unknown) defaults to all zeros.
    """
    tags = np.zeros(n_items, dtype=np.int32) if tags is None else np.asarray(tags, dtype=np.int32)
    arrays = {
        s: (np.asarray(u, dtype=np.int64), np.asarray(i, dtype=np.int64))
        for s, (u, i) in splits.items()
    }
    digest = hashlib.sha256(tags.tobytes())
    for s in SPLITS:
        for a in arrays.get(s, ()):
            digest.update(s.encode() + a.tobytes())
    fp = fingerprint({"n_users": n_users, "n_items": n_items, "arrays": digest.hexdigest()})
    manifest = {
        "fingerprint": fp,
        "name": "synthetic",
        "n_users": n_users,
        "n_items": n_items,
        "n_tags": int(tags.max(initial=0)) + 1,
        "numeric_columns": [],
    }
    with atomic_dir(Path(root)) as tmp:
        pl.DataFrame(
            {
                "user_idx": np.arange(n_users, dtype=np.int32),
                "user_id": [f"u{k}" for k in range(n_users)],
            }
        ).write_parquet(tmp / "users.parquet")
        pl.DataFrame(
            {
                "item_idx": np.arange(n_items, dtype=np.int32),
                "item_id": [f"i{k}" for k in range(n_items)],
                "title": [""] * n_items,
                "text": [""] * n_items,
                "tag": [str(t) for t in tags],
                "tag_idx": tags,
                "cover_path": pl.Series([None] * n_items, dtype=pl.String),
                "cover_ok": np.zeros(n_items, dtype=bool),
            }
        ).write_parquet(tmp / "items.parquet")
        for s in SPLITS:
            u, i = arrays.get(s, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
            pl.DataFrame(
                {
                    "user_idx": u.astype(np.int32),
                    "item_idx": i.astype(np.int32),
                    "timestamp": np.arange(len(u), dtype=np.int64),
                }
            ).write_parquet(tmp / f"{s}.parquet")
        atomic_write_json(tmp / MANIFEST, manifest)
    return PreparedDataset.load(root)


def synthetic_prepared(
    root: Path,
    n_users: int = 50_000,
    n_items: int = 82_865,
    mean_per_user: float = 19.79,
    seed: int = 0,
) -> PreparedDataset:
    """A random dataset of the given size: >= 5 items per user (geometric tail), Zipf-like item
    popularity, each user's interactions split 70/15/15 at random."""
    rng = np.random.default_rng(seed)
    per_user = 5 + rng.geometric(1.0 / (mean_per_user - 4), size=n_users)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.5
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.permutation(n_items)[
        np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(len(users))).clip(
            max=n_items - 1
        )
    ]
    pairs = np.unique(users * n_items + items)  # one interaction per (user, item)
    users, items = pairs // n_items, pairs % n_items
    order = np.lexsort((rng.random(len(users)), users))  # random order within each user
    users, items = users[order], items[order]
    starts = np.searchsorted(users, users, side="left")
    counts = np.bincount(users, minlength=n_users)[users]
    share = (np.arange(len(users)) - starts) / counts
    label = np.where(share < 0.7, 0, np.where(share < 0.85, 1, 2))
    splits = {s: (users[label == k], items[label == k]) for k, s in enumerate(SPLITS)}
    return write_prepared(root, n_users, n_items, splits)


def find_dataset() -> tuple[PreparedDataset, str]:
    """A prepared pixelrec50k sample (e.g. the data or training benchmark's) if one exists,
    else the synthetic stand-in."""
    for manifest in sorted(PREPARED.glob(f"*/{MANIFEST}")):
        root = str(json.loads(manifest.read_text()).get("settings", {}).get("root", ""))
        if Path(root).name.startswith("sample_pixelrec50k"):
            return PreparedDataset.load(manifest.parent), f"pixelrec50k sample prepared from {root}"
    if (SYNTHETIC / MANIFEST).is_file():
        return PreparedDataset.load(SYNTHETIC), "synthetic random, pixelrec50k size"
    return synthetic_prepared(SYNTHETIC), "synthetic random, pixelrec50k size"


def per_user_loop(
    model: Recommender, targets: FullRankingTargets, users: np.ndarray, k: int = 10
) -> dict:
    """The straightforward reference: one user at a time, score, mask, rank each positive."""
    row_of = {u: j for j, u in enumerate(targets.users)}
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg = [], []
    for u in users:
        scores = model.score_all(torch.tensor([u]))
        mask_excluded(scores, targets.exclude, np.array([u]))
        s = scores[0].numpy()
        pos = targets.positives[row_of[u]].indices
        hits, dcg = 0.0, 0.0
        for p in pos:  # expected position over ties, as the evaluator defines it
            above = int((s > s[p]).sum())
            tied = int((s == s[p]).sum()) - 1
            ranks = np.arange(above + 1, above + tied + 2)
            inside = ranks[ranks <= k]
            hits += len(inside) / (tied + 1)
            dcg += discount[inside - 1].sum() / (tied + 1)
        recall.append(hits / len(pos))
        ndcg.append(dcg / discount[: min(len(pos), k)].sum())
    return {"recall@10": float(np.mean(recall)), "ndcg@10": float(np.mean(ndcg))}


def bench_model(model: Recommender, dataset: PreparedDataset, loop_users: int) -> dict:
    _, fit_s = timed(lambda: model.fit(dataset))
    full = FullProtocol(user_fraction=1.0)
    targets = full.lists(dataset, "test")
    result, full_s = timed(lambda: evaluate(model, dataset, full, "test"))
    subset = np.sort(np.random.default_rng(0).choice(targets.users, size=loop_users, replace=False))
    loop, loop_s = timed(lambda: per_user_loop(model, targets, subset))
    sub = result.lists.filter(pl.col("user_idx").is_in(subset.tolist()))
    sampled = SampledProtocol()
    sampled.lists(dataset, "test")  # draw (or load) the candidates outside the timing
    sres, sampled_s = timed(lambda: evaluate(model, dataset, sampled, "test"))
    n_users = len(targets.users)
    n_lists = sres.metrics["test/sampled/n_lists"]
    return {
        "fit_s": fit_s,
        "full_ranking": {
            "users": n_users,
            "positives": int(targets.positives.nnz),
            "seconds": full_s,
            "users_per_s": n_users / full_s,
            "scores_per_s": n_users * dataset.n_items / full_s,
            "ndcg@10": result.metrics["test/full/ndcg@10"],
        },
        "per_user_loop": {
            "users": loop_users,
            "seconds": loop_s,
            "users_per_s": loop_users / loop_s,
            "extrapolated_all_users_s": loop_s / loop_users * n_users,
            "same_metrics_on_subset": bool(
                abs(loop["recall@10"] - sub["recall@10"].mean()) < 1e-9
                and abs(loop["ndcg@10"] - sub["ndcg@10"].mean()) < 1e-9
            ),
        },
        "speedup_batched_vs_loop": (loop_s / loop_users) / (full_s / n_users),
        "sampled": {"lists": n_lists, "seconds": sampled_s, "lists_per_s": n_lists / sampled_s},
    }


def main() -> None:
    keys = {"loop_users": (2000, "users timed through the per-user loop")}
    args = bench_settings(sys.argv[1:], keys, __doc__)
    policy = apply_thread_policy()
    t0 = time.perf_counter()
    (dataset, kind), load_s = timed(find_dataset)
    results = {
        "dataset": {
            "kind": kind,
            "root": str(dataset.root),
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "train": len(dataset.train),
            "test": len(dataset.test),
            "load_or_synthesise_s": load_s,
        },
        "threads": policy.as_dict(),
        "load_at_start": load(),
        "models": {
            "BPR-MF (conf defaults)": bench_model(BPRMF(), dataset, loop_users=args.loop_users),
            "ItemKNN (k=100)": bench_model(ItemKNN(), dataset, loop_users=args.loop_users),
        },
    }
    results["total_s"] = time.perf_counter() - t0
    results["peak_rss_mib"] = peak_rss_mib()
    write("evaluation", results)


if __name__ == "__main__":
    main()
