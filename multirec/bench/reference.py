"""Our baselines against independent implementations (``python -m multirec.bench.reference``).

Needs the optional extra: ``pip install -e ".[reference]"`` (implicit, and RecBole, whose wheel
ships MovieLens-100K). Results: ``outputs/bench/reference.json``.

Data: MovieLens-100K (943 users, 1,682 movies, 100,000 ratings; every rating counts as an
interaction) read from the copy inside the ``recbole`` wheel -- nothing is downloaded --
written out in PixelRec format and prepared by multirec's own pipeline: 5-core, random
70/15/15 split per user (seed 42), no covers (``data.covers.policy=keep``). Every model, ours
and theirs, is fitted on that ``train`` split and evaluated by :func:`multirec.eval.evaluator.evaluate`
(full ranking of the test split, training and validation items masked), so the metric code
is identical; a reference model is seen through a thin :class:`Reference` adapter that
returns its scores.

Pairs compared (same neighbourhood size, similarity and scoring rule):

* ItemKNN ``neighbourhood=target`` vs RecBole's ItemKNN (``ComputeSimilarity``, then
  ``X @ W``), k=100, shrink=0 (RecBole's defaults; it adds 1e-6 to the denominator).
* ItemKNN ``neighbourhood=history`` vs implicit's ``CosineRecommender``: plain cosine (no
  shrink), and ``K = k + 1`` because implicit keeps each item as its own nearest neighbour.
* UserKNN vs RecBole's ItemKNN with ``knn_method=user``, k=100, shrink=0.
* BPR-MF vs RecBole's BPR, trained by RecBole's own trainer on our split at RecBole's
  defaults (Adam, lr 1e-3, batch 2048, uniform negatives, no item bias, no L2), 64 factors,
  early-stopped by RecBole on its validation NDCG@10; compared with our tuned BPR-MF and
  with ours at the same optimiser settings and initial scale (Adam lr 1e-3, no L2, factors
  drawn with standard deviation 0.04), untuned.
* BPR-MF vs implicit's ``BayesianPersonalizedRanking`` (multithreaded SGD, negatives drawn
  from the interaction list, i.e. by popularity), 64 factors plus an item bias.

  Ours and implicit's are each tuned on a small grid of their own step size and L2 weight
  (``GRIDS``; the values mean different things to the two optimisers), picked on
  validation only. All three BPRs stop the same way: validation NDCG@10 (full ranking,
  training items masked) after every epoch, patience 10, at most 200 epochs, the best
  epoch's factors kept. RecBole's run is too slow here for a grid of its own.

Each reported run (fit + test evaluation) happens in a fresh subprocess, so its peak RSS is
its own; ``rss_before_fit_mib`` is that process's RSS after imports and data loading.
``eval_s`` is the fastest of ``EVAL_REPEATS`` evaluations.
Fit times include the per-epoch validations of the early-stopped models. Reference scores
for evaluation come from their fitted matrices (``X @ W`` for the neighbourhood models,
factor products for BPR), as the libraries themselves compute them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
import scipy.sparse as sp
import torch

from multirec.baselines.bprmf import BPRMF
from multirec.baselines.knn import ItemKNN, UserKNN
from multirec.bench.common import (
    BENCH_DIR,
    bench_settings,
    in_subprocess,
    peak_rss_mib,
    timed,
    write,
)
from multirec.data.config import CoversConfig, DataConfig
from multirec.data.dataset import SPLITS, PreparedDataset
from multirec.data.pixelrec import pixelrec_node
from multirec.data.prepare import prepare
from multirec.errors import MultirecError
from multirec.eval.evaluator import evaluate
from multirec.eval.protocols import FullProtocol
from multirec.eval.validation import full_ranking_validation
from multirec.models.base import Recommender, Validation

MODULE = "multirec.bench.reference"  # run again in fresh subprocesses, by name
WORK = BENCH_DIR / "reference"
K = 100
MAX_EPOCHS = 200
PATIENCE = 10
FACTORS = 64
SEED = 0
EVAL_REPEATS = 3
GRIDS = {  # step size x L2 weight, in each optimiser's own terms
    "ours-bprmf": [{"lr": lr, "reg": reg} for lr in (0.002, 0.005) for reg in (0.01, 0.03)],
    "implicit-bpr": [
        {"learning_rate": lr, "regularization": reg} for lr in (0.01, 0.05) for reg in (0.001, 0.01)
    ],
}
RECBOLE_BPR = {"learning_rate": 0.001}  # RecBole's default (its BPR has no L2 weight)
# ours untuned, at RecBole's optimiser settings and initial scale (it draws embeddings
# Xavier-normal: standard deviation sqrt(2 / (rows + 64)), about 0.04 for these tables)
OURS_AT_RECBOLE_SETTINGS = {"lr": 0.001, "reg": 0.0, "init_std": 0.04}


def movielens_100k() -> Path:
    """The MovieLens-100K folder inside the installed ``recbole`` package (not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise MultirecError(
            'recbole is not installed; pip install -e ".[reference]" (its wheel ships MovieLens-100K)'
        )
    folder = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        raise MultirecError(f"{folder}/ml-100k.inter not found; reinstall recbole")
    return folder


def prepare_movielens(work: Path = WORK) -> PreparedDataset:
    """MovieLens-100K as a multirec prepared dataset (PixelRec-format files, then ``prepare``)."""
    src = movielens_100k()
    raw = work / "ml-100k-pixelrec"
    (raw / "covers").mkdir(parents=True, exist_ok=True)  # empty: no covers, policy=keep
    ratings = pl.read_csv(src / "ml-100k.inter", separator="\t", infer_schema=False)
    ratings.select(
        pl.col("user_id:token").alias("user_id"),
        pl.col("item_id:token").alias("item_id"),
        pl.col("timestamp:float").cast(pl.Float64).cast(pl.Int64).alias("timestamp"),
    ).write_csv(raw / "interactions.csv")
    movies = pl.read_csv(src / "ml-100k.item", separator="\t", quote_char=None, infer_schema=False)
    movies.select(
        pl.col("item_id:token").alias("item_id"),
        pl.col("movie_title:token_seq").alias("title"),
        pl.col("class:token_seq").str.split(" ").list.first().alias("tag"),  # first genre
        pl.lit("").alias("description"),
    ).write_csv(raw / "item_info.csv")
    reader = pixelrec_node()
    reader["columns"]["counts"] = []
    cfg = DataConfig(
        name="ml-100k", root=str(raw), reader=reader, covers=CoversConfig(policy="keep")
    )
    return prepare(cfg, work / "prepared", progress=False)


class Reference(Recommender):
    """A reference library's fitted model behind multirec's interface: scores of user rows."""

    def __init__(self, name: str, rows: Callable[[np.ndarray], np.ndarray]) -> None:
        self._name = name
        self.rows = rows

    @property
    def name(self) -> str:
        return self._name

    def _fit(self, dataset: PreparedDataset, validation: Validation | None = None) -> None:
        """Fitted by the reference library before being wrapped."""

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.score_all(users), 1, items.cpu())

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.rows(users.cpu().numpy()), dtype=np.float32))


def _sparse_rows(scores: sp.spmatrix) -> Callable[[np.ndarray], np.ndarray]:
    scores = sp.csr_matrix(scores)
    return lambda users: scores[users].toarray()


def factor_rows(user: np.ndarray, item: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Score rows of a factor model as the libraries compute them: ``user @ item.T``."""
    user, item = torch.from_numpy(user), torch.from_numpy(item)
    return lambda users: (user[torch.from_numpy(users)] @ item.T).numpy()


def recbole_knn(ds: PreparedDataset, method: str, k: int, shrink: float) -> Reference:
    """RecBole's ItemKNN model as it fits: similarity, then the user x item score matrix."""
    from recbole.model.general_recommender.itemknn import ComputeSimilarity

    x = ds.interaction_matrix("train").astype(np.float32)
    _, w = ComputeSimilarity(x, topk=k, shrink=shrink, method=method).compute_similarity()
    pred = w.dot(x) if method == "user" else x.dot(w)
    name = "RecBole UserKNN" if method == "user" else "RecBole ItemKNN"
    return _bound(Reference(name, _sparse_rows(pred)), ds)


def implicit_cosine(ds: PreparedDataset, k: int) -> Reference:
    """implicit's item-item cosine model; ``K = k + 1`` keeps ``k`` neighbours besides itself."""
    from implicit.nearest_neighbours import CosineRecommender

    x = ds.interaction_matrix("train").astype(np.float32)
    model = CosineRecommender(K=k + 1, num_threads=0)
    model.fit(x, show_progress=False)
    return _bound(Reference("implicit CosineRecommender", _sparse_rows(x @ model.similarity)), ds)


def implicit_bpr(
    ds: PreparedDataset, validation: Validation, learning_rate: float, regularization: float
) -> tuple[Reference, dict]:
    """implicit's BPR, one epoch per ``fit`` call (it resumes from its factors), early-stopped
    like ours on ``validation``; returns the best epoch's model and the training record."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    x = ds.interaction_matrix("train").astype(np.float32)
    model = BayesianPersonalizedRanking(
        factors=FACTORS,
        learning_rate=learning_rate,
        regularization=regularization,
        iterations=1,
        random_state=np.random.default_rng(SEED),  # one stream across the per-epoch calls
    )
    best: tuple[float, Reference, int] | None = None
    stale, epoch = 0, 0
    for epoch in range(1, MAX_EPOCHS + 1):
        model.fit(x, show_progress=False)
        ref = _bound(
            Reference(
                "implicit BPR", factor_rows(model.user_factors.copy(), model.item_factors.copy())
            ),
            ds,
        )
        score = validation(ref)
        if best is None or score > best[0]:
            best, stale = (score, ref, epoch), 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    assert best is not None
    return best[1], {"best_epoch": best[2], "epochs": epoch, "validation_ndcg@10": best[0]}


@contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run with ``folder`` as working directory: RecBole writes its TensorBoard logs into
    ``./log_tensorboard`` of whatever directory it runs from."""
    back = Path.cwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(back)


def recbole_bpr(ds: PreparedDataset, learning_rate: float) -> tuple[Reference, dict]:
    """RecBole's BPR (Adam, no item bias, no L2 by default) trained by RecBole's own trainer on
    our split (its pre-split ``benchmark_filename`` files), early-stopped by RecBole on its
    validation NDCG@10 with the same patience; the best epoch's embeddings are evaluated."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender.bpr import BPR
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    # RecBole 1.2.1 predates NumPy 2: its Config aliases np.float_, np.complex_ and
    # np.unicode_, which NumPy 2 removed; give it those names back
    np.float_, np.complex_, np.unicode_ = np.float64, np.complex128, np.str_
    name = "multirec_split"
    home = (WORK / "recbole").resolve()
    (home / name).mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        part = ds.split(split)
        pl.DataFrame({"user_id:token": part.users, "item_id:token": part.items}).write_csv(
            home / name / f"{name}.{split}.inter", separator="\t"
        )
    settings = {
        "data_path": str(home),
        "benchmark_filename": list(SPLITS),
        "load_col": {"inter": ["user_id", "item_id"]},
        "use_gpu": False,
        "seed": SEED,
        "checkpoint_dir": str(home / "saved"),
        "show_progress": False,
        "embedding_size": FACTORS,
        "learning_rate": learning_rate,
        "epochs": MAX_EPOCHS,
        "stopping_step": PATIENCE,
        "eval_step": 1,
        "metrics": ["NDCG", "Recall"],
        "topk": [10],
        "valid_metric": "NDCG@10",
    }
    with _inside(home):
        config = Config(model="BPR", dataset=name, config_dict=settings)
        init_seed(config["seed"], config["reproducibility"])
        data = create_dataset(config)
        train, valid, _ = data_preparation(config, data)
        model = BPR(config, train.dataset)
        trainer = Trainer(config, model)
        scores: dict[int, float] = {}  # epoch (0-based) -> validation NDCG@10
        best: dict[str, Any] = {}  # the best epoch (0-based) and its weights

        def keep_best(epoch: int, score: float) -> None:
            """Called after RecBole's early-stopping check: ``cur_step`` is 0 exactly when it
            took this epoch as its best, so the weights kept are the ones it would save.
            Kept in memory: RecBole's saved file is a pickle of its whole config."""
            scores[epoch] = score
            if trainer.cur_step == 0:
                best["epoch"] = epoch
                best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

        trainer.fit(train, valid, verbose=False, saved=False, callback_fn=keep_best)
    model.load_state_dict(best["state"])
    # RecBole renumbers tokens (id 0 is padding): put each embedding back at our index
    users = np.zeros((ds.n_users, FACTORS), dtype=np.float32)
    items = np.zeros((ds.n_items, FACTORS), dtype=np.float32)
    users[data.field2id_token["user_id"][1:].astype(np.int64)] = (
        model.user_embedding.weight[1:].detach().numpy()
    )
    items[data.field2id_token["item_id"][1:].astype(np.int64)] = (
        model.item_embedding.weight[1:].detach().numpy()
    )
    record = {
        "best_epoch": int(best["epoch"]) + 1,
        "epochs": len(scores),
        "validation_ndcg@10": float(scores[int(best["epoch"])]),
    }
    return _bound(Reference("RecBole BPR", factor_rows(users, items)), ds), record


def _bound(model: Recommender, ds: PreparedDataset) -> Recommender:
    model.bind(ds)
    return model


def fit_one(ds: PreparedDataset, spec: dict) -> tuple[Recommender, dict]:
    """Fit the model ``spec`` names on ``ds``; returns it and what its training recorded."""
    kind, settings = spec["model"], spec.get("settings", {})
    validation = full_ranking_validation(ds)
    if kind == "ours-itemknn":
        return ItemKNN(**settings).fit(ds), {}
    if kind == "ours-userknn":
        return UserKNN(**settings).fit(ds), {}
    if kind == "ours-bprmf":
        m = BPRMF(factors=FACTORS, epochs=MAX_EPOCHS, patience=PATIENCE, seed=SEED, **settings).fit(
            ds, validation
        )
        assert m.best_epoch is not None
        record = {"best_epoch": m.best_epoch, "epochs": len(m.epoch_losses)}
        return m, {**record, "validation_ndcg@10": m.validation_scores[m.best_epoch]}
    if kind == "recbole-knn":
        return recbole_knn(ds, **settings), {}
    if kind == "implicit-cosine":
        return implicit_cosine(ds, **settings), {}
    if kind == "implicit-bpr":
        return implicit_bpr(ds, validation, **settings)
    if kind == "recbole-bpr":
        return recbole_bpr(ds, **settings)
    raise MultirecError(f"unknown model {kind!r}")


def run_one(spec: dict) -> dict:
    """Fit and test-evaluate one model in this process; timings, metrics and memory."""
    ds = prepare_movielens()
    protocol = FullProtocol()
    protocol.lists(ds, "test")  # built outside the timings
    rss_before = psutil.Process().memory_info().rss / 2**20
    (model, record), fit_s = timed(lambda: fit_one(ds, spec))
    # the fastest of a few evaluations: one takes well under a second, so a single one
    # measures mostly what else the machine was doing at that moment
    runs = [timed(lambda: evaluate(model, ds, protocol, "test")) for _ in range(EVAL_REPEATS)]
    result, eval_s = runs[0][0], min(s for _, s in runs)
    return {
        **spec,
        "name": model.name,
        "ndcg@10": result.metrics["test/full/ndcg@10"],
        "recall@10": result.metrics["test/full/recall@10"],
        "fit_s": fit_s,
        "eval_s": eval_s,
        "rss_before_fit_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        **record,
    }


def tune(kind: str, grid: list[dict]) -> dict:
    """Validation NDCG@10 of every setting in ``grid`` (one process); the best setting."""
    ds = prepare_movielens()
    scores = []
    for settings in grid:
        _, record = fit_one(ds, {"model": kind, "settings": settings})
        scores.append({"settings": settings, **record})
    best = max(scores, key=lambda s: s["validation_ndcg@10"])
    return {"grid": scores, "picked": best["settings"]}


def comparisons(tuning: dict[str, dict]) -> dict[str, tuple[dict, dict]]:
    """(ours, reference) run specs of every comparison, BPR settings as each was tuned."""
    ours_bpr = {"model": "ours-bprmf", "settings": tuning["ours-bprmf"]["picked"]}
    return {
        "itemknn_target_vs_recbole": (
            {"model": "ours-itemknn", "settings": {"k": K, "shrink": 0.0}},
            {"model": "recbole-knn", "settings": {"method": "item", "k": K, "shrink": 0.0}},
        ),
        "itemknn_history_vs_implicit": (
            {
                "model": "ours-itemknn",
                "settings": {"k": K, "shrink": 0.0, "neighbourhood": "history"},
            },
            {"model": "implicit-cosine", "settings": {"k": K}},
        ),
        "userknn_vs_recbole": (
            {"model": "ours-userknn", "settings": {"k": K, "shrink": 0.0}},
            {"model": "recbole-knn", "settings": {"method": "user", "k": K, "shrink": 0.0}},
        ),
        "bprmf_vs_recbole": (ours_bpr, {"model": "recbole-bpr", "settings": RECBOLE_BPR}),
        "bprmf_at_recbole_settings_vs_recbole": (
            {"model": "ours-bprmf", "settings": OURS_AT_RECBOLE_SETTINGS},
            {"model": "recbole-bpr", "settings": RECBOLE_BPR},
        ),
        "bprmf_vs_implicit": (
            ours_bpr,
            {"model": "implicit-bpr", "settings": tuning["implicit-bpr"]["picked"]},
        ),
    }


def main() -> None:
    # internal: the subprocesses of one run (--one SPEC) and of one tuning grid (--tune KIND)
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(run_one(json.loads(sys.argv[2]))))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--tune":
        print(json.dumps(tune(sys.argv[2], GRIDS[sys.argv[2]])))
        return
    bench_settings(sys.argv[1:], {}, __doc__)
    ds = prepare_movielens()
    t0 = time.perf_counter()
    tuning = {kind: in_subprocess(MODULE, "--tune", kind) for kind in GRIDS}
    pairs = comparisons(tuning)
    runs: dict[str, dict] = {}  # spec (JSON) -> its run, so a shared side runs once

    def run(spec: dict) -> dict:
        key = json.dumps(spec, sort_keys=True)
        if key not in runs:
            runs[key] = in_subprocess(MODULE, "--one", key)
        return runs[key]

    results = {}
    for name, (ours, theirs) in pairs.items():
        a, b = run(ours), run(theirs)
        results[name] = {
            "ours": a,
            "reference": b,
            "ndcg@10_relative_gap": a["ndcg@10"] / b["ndcg@10"] - 1,
            "recall@10_relative_gap": a["recall@10"] / b["recall@10"] - 1,
        }
    write(
        "reference",
        {
            "dataset": {
                "name": "MovieLens-100K (from the recbole wheel), every rating an interaction",
                "prepared": str(ds.root),
                "fingerprint": ds.fingerprint,
                "n_users": ds.n_users,
                "n_items": ds.n_items,
                "split_sizes": {s: len(ds.split(s)) for s in ("train", "valid", "test")},
                "split": "5-core, random 70/15/15 per user, seed 42",
            },
            "protocol": "full ranking of the test split, training and validation items masked; "
            "multirec.eval.evaluator.evaluate for every model",
            "bpr_tuning": {**tuning, "recbole-bpr": {"picked": RECBOLE_BPR, "grid": "none"}},
            "bpr_common": {
                "factors": FACTORS,
                "max_epochs": MAX_EPOCHS,
                "patience": PATIENCE,
                "seed": SEED,
            },
            "threads": {"torch": torch.get_num_threads(), "cpus": os.cpu_count()},
            "load_average_at_end": os.getloadavg(),
            "wall_s": time.perf_counter() - t0,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
