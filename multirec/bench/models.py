"""Fit and full-ranking time of every model at PixelRec50K scale (``python -m multirec.bench.models``).

Every model multirec compares -- the baselines MostPopular, ItemKNN, UserKNN and BPR-MF
(``conf/baseline``) and the neural models VBPR, LightGCN, FREEDOM and the multimodal
two-tower model (``conf/model``), each at its conf defaults -- on the pixelrec50k-size sample
the training benchmark prepares (50,000 users, 82,844 items, 689,522 training positives; no
covers, random features of the real dimensions: EfficientNet-Lite0 1280-d, MiniLM 384-d).
Each model runs in a fresh process (its peak RSS is its own) under multirec's thread policy,
with OpenMP's passive waiting set at start-up, and reports:

* fit time. The closed-form models (MostPopular, the kNNs) are fitted in full. The iterative
  ones are timed over a bounded run and extrapolated, marked ``extrapolated``: BPR-MF over
  ``epochs`` epochs; a neural model over ``steps`` Lightning steps after a warm-up, the
  epoch being its batch count times the steady step time plus what each epoch starts with
  (FREEDOM redraws its pruned graph), and the one-off work of the bounded run (trainer
  start-up, LightGCN's adjacency, FREEDOM's item-item kNN graph) added once. FREEDOM's
  item-item graph, minutes on two cores, is timed on ``graph_items`` random items and
  extrapolated (:func:`item_graph_stand_in`; ``graph_items=0`` builds the real one). ``fit_s`` is
  that per-epoch figure times the conf's epoch limit: an upper bound, since early stopping
  usually ends sooner, and without the per-epoch validations;
* full-ranking evaluation time of every test user through the evaluator's real path
  (:func:`multirec.eval.evaluator.evaluate` under :class:`FullProtocol`): scores, masking,
  top-K, metrics; over ``users`` test users and extrapolated to all when fewer are given;
* peak RSS after the data, the fit and the evaluation; threads; load before and after.

With ``references=true`` the same figures for the independent library on the same training
matrix, each in its own process of the same run, and the ratio ours / theirs: BPR-MF against
implicit's ``BayesianPersonalizedRanking`` (same factors, same number of epochs; per-epoch
time compared) and ItemKNN against implicit's ``CosineRecommender`` (ours at its settings:
``neighbourhood=history``, no shrink, ``K = k + 1`` as it keeps each item as its own
neighbour). A reference model is scored through :class:`multirec.bench.reference.Reference`
as ours are: factor products for BPR, ``X[users] @ W`` per batch for the kNN.
Results: ``outputs/bench/models.json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from multirec.bench.common import (
    bench_settings,
    in_subprocess,
    load,
    openmp_env,
    peak_rss_mib,
    timed,
    write,
)
from multirec.bench.reference import Reference, factor_rows
from multirec.bench.training import CONF, WARMUP, dataset, fit_steps
from multirec.bench.two_tower import full_ranking, random_items
from multirec.config import build
from multirec.data.dataset import PreparedDataset
from multirec.errors import MultirecError
from multirec.models.base import Recommender
from multirec.models.freedom import FREEDOM
from multirec.models.graph import knn_graph, square
from multirec.models.neural import build_model, dataset_sizes
from multirec.runtime import apply_thread_policy, available_cores
from multirec.runtime.threads import WAIT_POLICY

MODULE = "multirec.bench.models"  # run again in fresh subprocesses, by name
BASELINES = ["mostpop", "itemknn", "userknn", "bprmf"]  # conf/baseline names
NEURAL = ["vbpr", "lightgcn", "freedom", "multimodal"]  # conf/model names
# ours at the reference's settings, and the reference (implicit), on the same training matrix
PAIRS = {
    "bprmf_vs_implicit_bpr": ({"model": "bprmf"}, {"model": "implicit-bpr"}),
    "itemknn_vs_implicit_cosine": (
        {"model": "itemknn", "settings": {"neighbourhood": "history", "shrink": 0.0}},
        {"model": "implicit-cosine"},
    ),
}


def train_config(spec: dict, model: str = "multimodal") -> DictConfig:
    """``conf/train.yaml`` composed with ``model=<model>`` and the run's overrides: its model
    node, the baselines it compares (``compare.<name>``), its data module and epoch limit."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", [f"model={model}", *spec["overrides"]])


def baseline_node(spec: dict, name: str, settings: dict[str, Any]) -> DictConfig:
    """The baseline ``train`` compares under ``name``, as a run would build it, with ``settings``."""
    return OmegaConf.merge(train_config(spec).compare[name], settings)


def extrapolated(per_epoch_s: float, epochs: int, one_off_s: float = 0.0) -> dict:
    """An iterative fit's time at the conf's epoch limit from its per-epoch time."""
    return {
        "per_epoch_s": per_epoch_s,
        "conf_max_epochs": epochs,
        "fit_s": one_off_s + per_epoch_s * epochs,
        "extrapolated": True,
        "fit_s_means": "upper bound: the conf's epoch limit (early stopping usually ends "
        "sooner), without the per-epoch validations",
    }


def fit_baseline(ds: PreparedDataset, spec: dict) -> tuple[Recommender, dict]:
    """A conf/baseline model fitted on the training split; BPR-MF for ``epochs`` epochs only."""
    node = baseline_node(spec, spec["model"], spec.get("settings", {}))
    if spec["model"] != "bprmf":
        model, seconds = timed(lambda: build(node).fit(ds))
        return model, {"measured_s": seconds, "fit_s": seconds, "extrapolated": False}
    limit = int(node.epochs)
    node.epochs = spec["epochs"]  # no validation scorer: every epoch runs, none stops early
    model, seconds = timed(lambda: build(node).fit(ds))
    record = {"measured_s": seconds, "epochs_timed": spec["epochs"]}
    return model, {**record, **extrapolated(seconds / spec["epochs"], limit)}


def item_graph_stand_in(model: FREEDOM, m: int) -> dict:
    """FREEDOM's frozen item-item graph timed on ``m`` random items and extrapolated.

    Its cost is the all-pairs similarity product and top-k, both quadratic in the items, so
    the time on ``m`` items scales by ``(n / m)^2``; all ``n`` take minutes on two cores.
    The model then gets a stand-in of the same shape (``knn_k`` random neighbours per item
    and modality, the union of the modality graphs), so its timed steps propagate as much.
    """
    hp, items = model.hparams, model.items
    n, k = hp.n_items, hp.knn_k
    subset = torch.from_numpy(np.random.default_rng(0).choice(n, m, replace=False))
    seconds = 0.0
    for modality in model.projections:
        x, ok = getattr(items, modality)[subset], getattr(items, f"{modality}_ok")[subset]
        seconds += timed(lambda x=x, ok=ok: knn_graph(x, ok, k))[1]
    per_item = k * len(model.projections)
    cols = torch.randint(n, (n * per_item,), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(n).repeat_interleave(per_item)
    model.item_graph = square(rows, cols, torch.full((n * per_item,), 1.0 / per_item), n)
    return {
        "items_timed": m,
        "measured_s": seconds,
        "extrapolated_s": seconds * (n / m) ** 2,
        "steps_ran_on": f"a random stand-in graph of the same shape ({per_item} per item)",
        "peak_rss_lacks": "the full graph's working set: float32 features of all items and "
        "one block of similarities to all of them",
    }


def fit_neural(ds: PreparedDataset, spec: dict) -> tuple[Recommender, dict]:
    """A conf/model model over ``steps`` Lightning steps of the real data module, extrapolated
    to the conf's epochs (see the module docstring)."""
    cfg = train_config(spec, spec["model"])
    items = random_items(ds)
    model = build_model(cfg.model, dataset_sizes(ds, items))
    _, attach_s = timed(lambda: model.attach(ds, items))  # graphs built from the training matrix
    m = spec["graph_items"]
    graph = None
    if isinstance(model, FREEDOM) and model.hparams.item_layers and model.projections:
        graph = item_graph_stand_in(model, m) if 0 < m < ds.n_items else None
    dm = build(cfg.datamodule, dataset=ds)
    batches = len(dm.train_dataloader())
    if batches < WARMUP + spec["steps"]:
        raise MultirecError(
            f"an epoch has {batches} batches, fewer than the {WARMUP} warm-up and {spec['steps']} "
            "timed steps; lower steps= or datamodule.batch_size (overrides=[...])"
        )
    (rate, _), wall = timed(lambda: fit_steps(model, dm, spec["steps"]))
    step_s = dm.batch_size / rate
    _, epoch_start_s = timed(model.on_train_epoch_start)
    # what the bounded run spent besides its steady steps: trainer start-up, first-use work
    rest = max(0.0, wall - (WARMUP + spec["steps"]) * step_s - epoch_start_s)
    record = {
        "measured_s": attach_s + (graph["measured_s"] if graph else 0.0) + wall,
        "steps_timed": spec["steps"],
        "warmup_steps": WARMUP,
        "batch_size": dm.batch_size,
        "step_s": step_s,
        "batches_per_epoch": batches,
        "epoch_start_s": epoch_start_s,
        "one_off_s": attach_s + (graph["extrapolated_s"] if graph else 0.0) + rest,
        "item_graph": graph,
    }
    per_epoch = epoch_start_s + batches * step_s
    limit = int(cfg.trainer.max_epochs)
    return model, {**record, **extrapolated(per_epoch, limit, record["one_off_s"])}


def fit_implicit_bpr(ds: PreparedDataset, spec: dict) -> tuple[Recommender, dict]:
    """implicit's BPR (multithreaded SGD) for ``epochs`` epochs with BPR-MF's factor count."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    node = baseline_node(spec, "bprmf", {})
    x = ds.interaction_matrix("train").astype(np.float32).tocsr()
    threads = available_cores()
    model = BayesianPersonalizedRanking(
        factors=int(node.factors), iterations=spec["epochs"], num_threads=threads, random_state=0
    )
    _, seconds = timed(lambda: model.fit(x, show_progress=False))
    ref = Reference("implicit BPR", factor_rows(model.user_factors, model.item_factors))
    record = {"measured_s": seconds, "epochs_timed": spec["epochs"], "implicit_threads": threads}
    per_epoch = seconds / spec["epochs"]  # extrapolated to BPR-MF's epoch limit, as ours is
    return ref, {**record, **extrapolated(per_epoch, int(node.epochs))}


def fit_implicit_cosine(ds: PreparedDataset, spec: dict) -> tuple[Recommender, dict]:
    """implicit's item-item cosine with ItemKNN's ``k`` (``K = k + 1``: it keeps each item as
    its own neighbour), scored per batch of users as ours is: ``X[users] @ W``."""
    from implicit.nearest_neighbours import CosineRecommender

    k = int(baseline_node(spec, "itemknn", {}).k)
    x = ds.interaction_matrix("train").astype(np.float32).tocsr()
    threads = available_cores()
    model = CosineRecommender(K=k + 1, num_threads=threads)
    _, seconds = timed(lambda: model.fit(x, show_progress=False))
    w = model.similarity.tocsr()
    ref = Reference("implicit CosineRecommender", lambda users: (x[users] @ w).toarray())
    record = {"measured_s": seconds, "fit_s": seconds, "extrapolated": False}
    return ref, {**record, "implicit_threads": threads}


def fit_one(ds: PreparedDataset, spec: dict) -> tuple[Recommender, dict]:
    if spec["model"] == "implicit-bpr":
        return fit_implicit_bpr(ds, spec)
    if spec["model"] == "implicit-cosine":
        return fit_implicit_cosine(ds, spec)
    if spec["model"] in NEURAL:
        return fit_neural(ds, spec)
    return fit_baseline(ds, spec)


def measure(spec: dict, ds: PreparedDataset) -> dict:
    """Fit and full-ranking test evaluation of one model in this (fresh) process."""
    policy = apply_thread_policy()
    load_at_start = load()
    torch.manual_seed(0)
    rss = {"after_imports_and_data": peak_rss_mib()}
    model, fit = fit_one(ds, spec)
    model.bind(ds)  # a reference model is fitted outside multirec's fit()
    rss["after_fit"] = peak_rss_mib()
    if isinstance(model, torch.nn.Module):
        model.eval()
    ranking = full_ranking(model, ds, spec["users"] or ds.n_users)
    rss["after_evaluation"] = peak_rss_mib()
    return {
        **spec,
        "name": model.name,
        "threads": {**policy.as_dict(), "torch": torch.get_num_threads()},
        "fit": fit,
        "full_ranking": ranking,
        "peak_rss_mib": rss,
        "load": {"start": load_at_start, "end": load()},
    }


def ratios(ours: dict, theirs: dict) -> dict:
    """Ours / theirs for fit (per epoch where iterative), evaluation and peak RSS."""
    fit_key = "per_epoch_s" if "per_epoch_s" in ours["fit"] else "fit_s"
    return {
        "fit_compares": fit_key,
        "fit": ours["fit"][fit_key] / theirs["fit"][fit_key],
        "full_ranking_s": ours["full_ranking"]["seconds_all_test_users"]
        / theirs["full_ranking"]["seconds_all_test_users"],
        "peak_rss": ours["peak_rss_mib"]["after_evaluation"]
        / theirs["peak_rss_mib"]["after_evaluation"],
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "run":
        print(json.dumps(measure(json.loads(sys.argv[2]), dataset())))
        return
    keys = {
        "models": (BASELINES + NEURAL, "conf/baseline and conf/model names to measure"),
        "references": (True, "also implicit's BPR and item-item cosine, ratios ours/theirs"),
        "epochs": (5, "BPR-MF (and implicit BPR) epochs timed, extrapolated"),
        "steps": (30, "neural training steps timed after a warm-up, extrapolated"),
        "users": (0, "test users ranked (0: all), the time extrapolated to all of them"),
        "graph_items": (16384, "items FREEDOM's item-item graph is timed on (0: all)"),
        "overrides": ([], "Hydra overrides of conf/train for every model, e.g. [loss=bce]"),
    }
    args = bench_settings(sys.argv[1:], keys, __doc__)
    ds = dataset()  # prepare once, outside the measured processes
    bounds = {k: getattr(args, k) for k in ("epochs", "steps", "users", "graph_items", "overrides")}
    runs: dict[str, dict] = {}  # spec (JSON) -> its run, so BPR-MF's row is also its pair's side

    def run(spec: dict) -> dict:
        key = json.dumps({**spec, **bounds}, sort_keys=True)
        if key not in runs:
            runs[key] = in_subprocess(MODULE, "run", key, env=openmp_env(WAIT_POLICY))
            print(spec, json.dumps(runs[key]), file=sys.stderr)
        return runs[key]

    models = {name: run({"model": name}) for name in args.models}
    pairs = {}
    for name, (ours, theirs) in PAIRS.items() if args.references else ():
        a, b = run(ours), run(theirs)
        pairs[name] = {"ours": a, "reference": b, "ours_over_reference": ratios(a, b)}
    dataset_info = {
        "root": str(ds.root),
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "train_positives": len(ds.train),
        "test_users": len(np.unique(ds.split("test").users)),
    }
    write("models", {"dataset": dataset_info, "bounds": bounds, "models": models, "pairs": pairs})


if __name__ == "__main__":
    main()
