"""Training throughput at PixelRec50K scale (`python -m multirec.bench.training`).

For each fusion, the real input pipeline (RecDataModule: per-epoch negatives,
shuffling, index batches; the model gathers float16 features held in memory) is timed
against the same model stepping over ready-made in-memory batches, in the same run.
Their ratio is the input-pipeline efficiency (target >= 0.9). Features are random, of
the real dimensions (EfficientNet-Lite0 1280-d, MiniLM 384-d), for 82,865 items.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from multirec.bench.common import in_subprocess, peak_rss_mib, write
from multirec.data.config import DataConfig
from multirec.data.datamodule import RecDataModule
from multirec.data.prepare import prepare
from multirec.models.items import ItemInputs
from multirec.models.neural import NeuralRecommender, build_model, dataset_sizes

SAMPLE = Path("outputs/data/sample_pixelrec50k_tables")
PREPARED = Path("outputs/prepared")
CONF = Path(__file__).resolve().parents[2] / "conf"
STEPS = 60
BATCH = 512


class Timer(L.Callback):
    """Wall time of training batches after a short warm-up."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup, self.t0, self.steps = warmup, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.steps += 1

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


class ReadyBatches(L.LightningDataModule):
    def __init__(self, batches: list) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None)


def dataset():
    if not (SAMPLE / "interactions.csv").is_file():
        from multirec.data.synthetic import generate_sample

        generate_sample(SAMPLE, size="pixelrec50k", seed=0, covers=False)
        (SAMPLE / "covers").mkdir(exist_ok=True)
    cfg = DataConfig(name="bench50k", root=str(SAMPLE))
    cfg.covers.policy = "keep"  # no images in this benchmark: items are kept, flagged
    return prepare(cfg, PREPARED)


def fit_steps(model, dm, steps: int) -> float:
    timer = Timer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    return timer.steps * BATCH / timer.seconds


def score_throughput(model: NeuralRecommender, n_users: int, n_items: int) -> dict:
    """Evaluation speed of the neural model: sampled lists (1 + 20 candidates) per second,
    batched, against a per-list Python loop; and full-ranking scores per second
    (users x item chunks, item tokens computed once per chunk)."""
    rng = torch.Generator().manual_seed(0)
    users = torch.randint(0, n_users, (4096,), generator=rng)
    lists = torch.randint(0, n_items, (4096, 21), generator=rng)
    t0 = time.perf_counter()
    batched = torch.cat(
        [model.score(users[i : i + 1024], lists[i : i + 1024]) for i in range(0, 4096, 1024)]
    )
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    looped = torch.cat([model.score(users[i : i + 1], lists[i : i + 1]) for i in range(256)])
    loop_s = time.perf_counter() - t0
    assert torch.allclose(batched[:256], looped, atol=1e-4)
    t0 = time.perf_counter()
    model.score_all(users[:64])
    full_s = time.perf_counter() - t0
    return {
        "sampled_lists_per_s": 4096 / batched_s,
        "sampled_lists_per_s_python_loop": 256 / loop_s,
        "sampled_batched_vs_loop": (4096 / batched_s) / (256 / loop_s),
        "full_ranking_scores_per_s": 64 * n_items / full_s,
    }


def one_fusion(fusion: str) -> dict:
    torch.manual_seed(0)
    ds = dataset()
    rng = np.random.default_rng(0)
    n = ds.n_items
    t0 = time.perf_counter()
    items = ItemInputs.build(
        ds.tag_index(),
        ds.numeric_features(),
        np.ones(n, dtype=bool),
        (
            rng.standard_normal((n, 1280), dtype=np.float32).astype(np.float16),
            np.ones(n, dtype=bool),
        ),
        (
            rng.standard_normal((n, 384), dtype=np.float32).astype(np.float16),
            np.ones(n, dtype=bool),
        ),
    )
    load_s = time.perf_counter() - t0
    feature_mib = (items.visual.nbytes + items.text.nbytes) / 2**20
    model_cfg = OmegaConf.load(CONF / "model" / "multimodal.yaml")
    model_cfg.fusion = OmegaConf.load(CONF / "fusion" / f"{fusion}.yaml")
    model_cfg.loss = OmegaConf.load(CONF / "loss" / "bce.yaml")
    model = build_model(model_cfg, dataset_sizes(ds, items))
    model.attach(ds, items)
    dm = RecDataModule(ds, batch_size=BATCH, num_negatives=4, seed=0)
    pipeline = fit_steps(model, dm, STEPS)
    dm.trainer = None
    ready = []
    for b in dm.train_dataloader():
        ready.append(b)
        if len(ready) == STEPS:
            break
    bare = fit_steps(model, ReadyBatches(ready), STEPS)
    n_train = len(ds.train)
    scoring = score_throughput(model, ds.n_users, n)
    return {
        "fusion": fusion,
        "train_interactions": n_train,
        "batch_size": BATCH,
        "negatives": 4,
        "pipeline_samples_per_s": pipeline,
        "ready_batches_samples_per_s": bare,
        "input_pipeline_efficiency": pipeline / bare,
        "epoch_time_s": n_train / pipeline,
        **scoring,
        "features_in_memory_mib": feature_mib,
        "feature_build_s": load_s,
        "peak_rss_mib": peak_rss_mib(),
    }


def main() -> None:
    if len(sys.argv) > 1:
        import json

        print(json.dumps(one_fusion(sys.argv[1])))
        return
    dataset()  # prepare once, outside the timed processes
    results = {
        f: in_subprocess("multirec.bench.training", f) for f in ("concat", "gated", "attention")
    }
    write("training", {"threads": torch.get_num_threads(), "fusions": results})


if __name__ == "__main__":
    main()
