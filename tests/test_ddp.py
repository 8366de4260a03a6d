"""Beyond one process: ``trainer=ddp`` on CPU (gloo) and the SLURM launcher config.

Two DDP processes with ``datamodule.batch_size=B`` each take their half of every global
batch of 2B training pairs and average their gradients, so they must train what one
process trains with ``batch_size=2B``: the same number of optimizer steps, the same
weights up to float rounding, the same test metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from multirec.data.dataset import PreparedDataset
from multirec.train import train
from tests.conftest import CONF, compose_cfg

REPO = Path(__file__).resolve().parents[1]
# Dropout draws its masks per process, so halving the batch would change them: off here.
# Three epochs over the tiny sample's ~400 training pairs in global batches of 128, each
# epoch checkpointed (Lightning writes last.ckpt only when it saves another checkpoint).
COMMON = [
    "data=tiny",
    "encoder=none_sbert",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "model.dropout=0",
    "model.id_dropout=0",
    "fusion.dropout=0",
    "++callbacks.model_checkpoint.save_top_k=-1",
]
BATCH = 64


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_ddp_two_processes_train_what_one_process_trains(tmp_path):
    # One process first: it extracts the features, DDP below finds them cached -- and must
    # still start from the same weights.
    single = train(
        compose_cfg(
            "train", [*COMMON, "logger=none", f"datamodule.batch_size={2 * BATCH}"], tmp_path
        )
    )

    run_dir = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "multirec.train",
            *COMMON,
            f"datamodule.batch_size={BATCH}",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "logger=wandb",  # the default logger: only rank 0 owns a W&B run
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        env={**os.environ, "MULTIREC_ROOT": str(tmp_path), "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    error = out[out.find("Traceback") :][:3000] if "Traceback" in out else out[-3000:]
    assert proc.returncode == 0, error
    # a failing second process does not change the first one's exit status
    assert "Traceback" not in out and "Error executing job" not in out, error
    # Lightning's own lines go to the run's log file, not the terminal
    assert "Starting with 2 processes" in (run_dir / "train.log").read_text()

    one, two = checkpoint(Path(single["run_dir"])), checkpoint(run_dir)
    # Sharded, each process steps once per global batch; unsharded (every process taking
    # every batch of 64) it would take about twice as many steps.
    n_train = len(PreparedDataset.load(single["dataset"]["root"]).train)
    assert two["global_step"] == one["global_step"] == 3 * -(-n_train // (2 * BATCH))
    # Float rounding only: the gradient all-reduce sums two half-batch means where one
    # process takes one mean (~1e-7 relative per step); after 12 AdamW steps of lr 3e-3
    # the weights agree to ~2e-5. Any real difference (other batches or negatives, an
    # unsynchronised gradient, other initial weights) moves them by whole steps (~lr).
    for name, w in one["state_dict"].items():
        got = two["state_dict"][name]
        if name.endswith("in_proj_bias"):
            # the attention's key bias adds q . b_k to every score of a query, which the
            # softmax ignores: its gradient is rounding noise, which AdamW turns into steps
            # of about lr, different in one process and two: only its query and value
            # thirds are compared
            d = len(w) // 3
            w, got = torch.cat([w[:d], w[2 * d :]]), torch.cat([got[:d], got[2 * d :]])
        torch.testing.assert_close(got, w, atol=5e-4, rtol=0, msg=name)
    # Rank metrics of the same rankings: equal, but for rounding in the averages.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tests = {k: v for k, v in single["metrics"].items() if k.startswith("test/")}
    assert tests and {k: metrics[k] for k in tests} == pytest.approx(tests, abs=1e-6)
    # rank 0 alone writes results and owns the W&B run
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
    assert (run_dir / "comparison.json").is_file()


@pytest.mark.parametrize("n", [1, 3, 128, 400, 401])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_cover_every_global_batch_in_equal_steps(n, world):
    """Each process gets as many batches as the others (an all-reduce per step), the shares
    of a global batch are contiguous and differ by at most one row, and together they hold
    every row once -- but for a last global batch too small to give each process a row."""
    from multirec.data.datamodule import shard_bounds

    shards = [shard_bounds(n, 64, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1
    rows = sorted(r for s in shards for a, b in s for r in range(a, b))
    assert len(rows) == len(set(rows))
    dropped = n - len(rows)
    assert rows == list(range(len(rows))) and dropped == (
        n % (64 * world) if n % (64 * world) < world else 0
    )
    for step in zip(*shards, strict=True):
        sizes = [b - a for a, b in step]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1 and max(sizes) <= 64
        assert all(step[i][1] == step[i + 1][0] for i in range(world - 1))
    assert shard_bounds(n, 64) == [
        (s, min(s + 64, n)) for s in range(0, n, 64)
    ]  # one process: as before


def test_slurm_launcher_follows_the_trainer():
    """conf/hydra/launcher/slurm.yaml composes against the submitit plugin's schema (unknown
    keys would fail here) and asks SLURM for one task per DDP process."""
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="optional extra: pip install -e '.[slurm]'"
    )
    overrides = [
        "hydra/launcher=slurm",
        "experiment=paper_encoders",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.partition=gpu",
    ]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    # resolved as the sweeper resolves it: before any job, without Hydra's runtime config
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (params["tasks_per_node"], params["nodes"], params["gpus_per_node"]) == (4, 2, 4)
    assert params["partition"] == "gpu" and params["submitit_folder"].endswith("/.submitit/%j")
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    # without DDP: one task on one node
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        plain = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert (plain.hydra.launcher.tasks_per_node, plain.hydra.launcher.nodes) == (1, 1)


def test_ddp_in_a_local_sweep_is_refused(tmp_path, monkeypatch):
    """Lightning re-runs the command line for DDP's other processes; in a local multirun
    each would re-run the sweep. Processes SLURM starts (the slurm launcher) are fine."""
    from multirec.errors import ConfigError
    from multirec.train import check_launch

    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "GROUP_RANK"):
        monkeypatch.delenv(var, raising=False)
    check_launch(compose_cfg("train", ["trainer=ddp"], tmp_path))  # a single run
    sweep = compose_cfg("train", ["trainer=ddp", "hydra.mode=MULTIRUN"], tmp_path)
    with pytest.raises(ConfigError, match="hydra/launcher=slurm"):
        check_launch(sweep)
    check_launch(compose_cfg("train", ["hydra.mode=MULTIRUN"], tmp_path))  # no DDP
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    check_launch(compose_cfg("train", ["trainer=ddp", "hydra.mode=MULTIRUN"], tmp_path))
