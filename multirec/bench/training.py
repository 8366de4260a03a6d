"""Training against what the machine can do, at PixelRec50K scale (`python -m multirec.bench.training`).

The default model (``conf/model/multimodal.yaml``, attention fusion, BCE; ``fusions=[...]``
for others) on the pixelrec50k-size sample (50,000 users, 82,844 items, 689,522
training positives) with random features of the real dimensions (EfficientNet-Lite0
1280-d, MiniLM 384-d, float16), trained through the real input pipeline (RecDataModule)
and Lightning for ``steps`` steps after a warm-up. Reported per run:

* positives/s against the limit implied by the FLOPs of one training step (forward and
  backward, counted with ``FlopCounterMode``) per positive and the all-core float32
  matmul throughput measured in the same process before and after;
* the epoch's training time extrapolated from it, and (``validate``, first run only)
  one real validation pass (the sampled protocol every epoch runs) and what multirec's
  own pre-fit estimate (:mod:`multirec.pipeline.estimates`) predicted for both;
* peak RSS of the process after each stage (imports, model, training, validation);
* what the pre-fit check says of a full-ranking test of every test user (first run);
* the optimiser step alone on the model's parameters: for-loop vs fused AdamW; and the id
  tables' update, RowAdamW on a batch's touched rows against fused AdamW over every row, at
  the model's table size and ten times it.

Each thread configuration (``configs``) runs in a fresh process, since OpenMP reads its
settings at start-up: ``policy`` is multirec's thread policy, ``default`` torch's defaults
before it (OpenMP threads spin while waiting, one per core), ``passive-t1`` and the like
fix the wait policy and torch threads. With ``busy=[0,1]`` each also runs beside one more
process keeping a core busy. Every figure carries the load average it ran under.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf

from multirec.bench.common import (
    bench_settings,
    busy_core,
    count_flops,
    in_subprocess,
    load,
    matmul_gflops,
    openmp_env,
    peak_rss_mib,
    write,
)
from multirec.data.config import DataConfig
from multirec.data.datamodule import RecDataModule
from multirec.data.prepare import prepare
from multirec.models.items import ItemInputs
from multirec.models.neural import NeuralRecommender, build_model, dataset_sizes
from multirec.runtime import apply_thread_policy, available_cores

SAMPLE = Path("outputs/data/sample_pixelrec50k_tables")
PREPARED = Path("outputs/prepared")
CONF = Path(__file__).resolve().parents[2] / "conf"
BATCH = 512
NEGATIVES = 4
WARMUP = 5


class Timer(L.Callback):
    """Wall time of training batches after a short warm-up."""

    def __init__(self, warmup: int = WARMUP) -> None:
        self.warmup, self.t0, self.cpu0, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.steps += 1

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def cpu_seconds(self) -> float:
        return time.process_time() - self.cpu0


def sample_tables() -> None:
    """The pixelrec50k-size sample's tables (no covers), generated once."""
    if not (SAMPLE / "interactions.csv").is_file():
        from multirec.data.synthetic import generate_sample

        generate_sample(SAMPLE, size="pixelrec50k", seed=0, covers=False)
        (SAMPLE / "covers").mkdir(exist_ok=True)


def dataset():
    sample_tables()
    cfg = DataConfig(name="bench50k", root=str(SAMPLE))
    cfg.covers.policy = "keep"  # no images in this benchmark: items are kept, flagged
    return prepare(cfg, PREPARED)


def random_features(n: int, dim: int, seed: int) -> np.ndarray:
    """float16 standard-normal features, drawn in blocks so no float32 copy is held."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float16)
    for s in range(0, n, 8192):
        out[s : s + 8192] = rng.standard_normal((min(8192, n - s), dim), dtype=np.float32)
    return out


def build(fusion: str):
    torch.manual_seed(0)
    ds = dataset()
    n = ds.n_items
    ok = np.ones(n, dtype=bool)
    items = ItemInputs.build(
        ds.tag_index(),
        ds.numeric_features(),
        ds.seen_items(),
        (random_features(n, 1280, 0), ok),
        (random_features(n, 384, 1), ok),
    )
    model_cfg = OmegaConf.load(CONF / "model" / "multimodal.yaml")
    model_cfg.fusion = OmegaConf.load(CONF / "fusion" / f"{fusion}.yaml")
    model_cfg.loss = OmegaConf.load(CONF / "loss" / "bce.yaml")
    model = build_model(model_cfg, dataset_sizes(ds, items))
    model.attach(ds, items)
    return ds, items, model


def step_flops(model: NeuralRecommender, ds) -> float:
    """FLOPs of one training step's forward and backward, per training positive."""
    gen = torch.Generator().manual_seed(0)
    batch = (
        torch.randint(ds.n_users, (BATCH,), generator=gen),
        torch.randint(ds.n_items, (BATCH,), generator=gen),
        torch.randint(ds.n_items, (BATCH, NEGATIVES), generator=gen),
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flops = count_flops(lambda: model.training_step(batch, 0).backward())
    model.zero_grad(set_to_none=True)
    return flops / BATCH


def fit_steps(model: NeuralRecommender, dm: RecDataModule, steps: int) -> tuple[float, float]:
    """Positives per second and per CPU-second of ``steps`` Lightning training steps of
    ``dm``'s batches after the warm-up."""
    timer = Timer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=steps + WARMUP,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    positives = timer.steps * dm.batch_size
    return positives / timer.seconds, positives / timer.cpu_seconds


def optimiser_steps(model: NeuralRecommender) -> dict:
    """ms per AdamW step on the model's parameters with random gradients: for-loop vs fused."""
    out = {}
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    for name, kw in (("for_loop", {"foreach": False}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(params, lr=1e-3, **kw)
        opt.step()
        t0 = time.perf_counter()
        for _ in range(5):
            opt.step()
        out[f"{name}_ms"] = (time.perf_counter() - t0) / 5 * 1000
    out["parameters"] = sum(p.numel() for p in params)
    out["embedding_parameters"] = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)
    )
    rows = sum(m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding))
    out["row_updates_ms"] = {f"{k}x_rows": row_updates(rows * k) for k in (1, 10)}
    return out


def row_updates(rows: int, dim: int = 64, touched: int = 8000) -> dict:
    """Median ms of one update of a ``rows`` x ``dim`` embedding table of which a batch touched
    ``touched`` rows: RowAdamW on its sparse gradient against fused AdamW over every row."""
    from multirec.models.optim import RowAdamW

    out = {}
    idx = torch.randint(0, rows, (touched,))
    for name, sparse in (("row_adamw", True), ("fused_adamw_dense", False)):
        emb = torch.nn.Embedding(rows, dim, sparse=sparse)
        opt = (
            RowAdamW([{"params": emb.parameters(), "rows": True}], lr=1e-3, fused=True)
            if sparse
            else torch.optim.AdamW(emb.parameters(), lr=1e-3, fused=True)
        )
        times = []
        for _ in range(11):
            opt.zero_grad()
            emb(idx).sum().backward()
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        out[name] = sorted(times)[5] * 1000
    return out


def validation(model: NeuralRecommender, ds, datamodule: RecDataModule) -> dict:
    """One real validation pass, multirec's own estimates of it and of the epoch, and what
    the pre-fit check says of a full-ranking test of every test user."""
    from multirec.errors import ConfigError
    from multirec.eval.callback import RankingEvaluation
    from multirec.eval.protocols import FullProtocol, SampledProtocol
    from multirec.eval.registry import MetricSet
    from multirec.pipeline.estimates import check_step_times

    protocols = {"sampled": SampledProtocol(), "full": FullProtocol()}
    evaluation = RankingEvaluation(ds, protocols, MetricSet())
    refusal = None
    try:
        check_step_times(model, datamodule, evaluation, True, 1.0, False)
    except ConfigError as exc:
        refusal = str(exc)
    estimates = check_step_times(model, datamodule, evaluation, True, 1.0, True)
    evaluation.evaluate(model, "valid")  # draws and saves the candidate lists once
    t0 = time.perf_counter()
    evaluation.evaluate(model, "valid")
    seconds = time.perf_counter() - t0
    return {
        "validation_s": seconds,
        "valid_scores": estimates[1].work,
        "valid_scores_per_s": estimates[1].work / seconds,
        "estimated_epoch_training_s": estimates[0].seconds,
        "estimated_validation_s": estimates[1].seconds,
        "estimated_full_ranking_test_s": estimates[3].seconds,
        "full_ranking_test_refusal": refusal,
    }


def train_once(spec: dict) -> dict:
    """One configuration, in this (fresh) process."""
    policy = apply_thread_policy({"torch": spec["torch"]})
    rss = {"after_imports": peak_rss_mib()}
    ds, items, model = build(spec["fusion"])
    rss["after_building_the_model"] = peak_rss_mib()
    flops = step_flops(model, ds)
    dm = RecDataModule(ds, batch_size=BATCH, num_negatives=NEGATIVES, seed=0)
    with busy_core(spec["busy"]):
        load_before, mm_before = load(), matmul_gflops()
        rate, cpu_rate = fit_steps(model, dm, spec["steps"])
        mm_after, load_after = matmul_gflops(), load()
    rss["after_training"] = peak_rss_mib()
    limit = (mm_before + mm_after) / 2 * 1e9 / flops
    out = {
        "fusion": spec["fusion"],
        "threads": {**policy.as_dict(), "torch": torch.get_num_threads()},
        "train_positives": len(ds.train),
        "batch_size": BATCH,
        "negatives": NEGATIVES,
        "steps": spec["steps"],
        "positives_per_s": rate,
        "positives_per_cpu_s": cpu_rate,
        "gflop_per_positive": flops / 1e9,
        "matmul_gflops_all_cores": [mm_before, mm_after],
        "limit_positives_per_s": limit,
        "ratio_to_limit": rate / limit,
        "epoch_training_s": len(ds.train) / rate,
        "load": {"before": load_before, "after": load_after},
        "features_in_memory_mib": (items.visual.nbytes + items.text.nbytes) / 2**20,
    }
    if spec["validate"]:
        dm.trainer = model.trainer = None  # as before fitting, where multirec estimates
        out.update(validation(model, ds, dm))
        out["epoch_s"] = out["epoch_training_s"] + out["validation_s"]
        rss["after_validation"] = peak_rss_mib()
    out["peak_rss_mib"] = rss
    out["optimiser"] = optimiser_steps(model)  # after the peak RSS: it copies the parameters
    return out


def parse_config(name: str, cores: int) -> dict:
    """``policy``, ``default`` or ``<wait>-t<torch>`` -> environment and torch threads."""
    if name == "policy":
        return {"wait": "PASSIVE", "torch": None}
    if name == "default":
        return {"wait": None, "torch": cores}
    wait, t = name.split("-")
    return {"wait": None if wait == "spin" else wait.upper(), "torch": int(t[1:])}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "run":
        print(json.dumps(train_once(json.loads(sys.argv[2]))))
        return
    keys = {
        "fusions": (["attention"], "fusion options of conf/fusion to time"),
        "configs": (["policy", "default"], "thread configurations"),
        "busy": ([0, 1], "0: the machine as it is, 1: one more core kept busy"),
        "steps": (30, "timed steps per run"),
        "validate": (True, "time one real validation pass in the first run"),
    }
    args = bench_settings(sys.argv[1:], keys, __doc__)
    dataset()  # prepare once, outside the timed processes
    cores = available_cores()
    runs, first = {}, True
    for fusion in args.fusions:
        for busy in args.busy:
            for name in args.configs:
                cfg = parse_config(name, cores)
                spec = {
                    **cfg,
                    "fusion": fusion,
                    "busy": busy,
                    "steps": args.steps,
                    "validate": args.validate and first,
                }
                key = f"{fusion} {name}{' + busy core' if busy else ''}"
                runs[key] = in_subprocess(
                    "multirec.bench.training", "run", json.dumps(spec), env=openmp_env(cfg["wait"])
                )
                print(key, json.dumps(runs[key]), file=sys.stderr)
                first = False
    write("training", {"runs": runs})


if __name__ == "__main__":
    main()
