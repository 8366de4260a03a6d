"""Opening a shared checkpoint runs no code; runs never share a folder; a run killed mid-epoch
resumes exactly; bad numbers are one-line errors before any work starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from multirec.errors import ConfigError, DataError, MultirecError
from multirec.pipeline.checkpoints import TRUSTED_TARGETS, read_checkpoint
from multirec.pipeline.settings import check_settings
from tests.conftest import CONF, compose_cfg

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload(marker)}}, path)
    with pytest.raises(DataError, match="could run code"):
        read_checkpoint(path)
    assert not marker.exists()


def test_a_target_payload_is_refused_before_anything_is_built(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("secret")
    path = tmp_path / "crafted.ckpt"
    hparams = {
        "fusion": {"_target_": "shutil.copy", "src": str(victim), "dst": str(tmp_path / "c")}
    }
    torch.save(
        {"state_dict": {}, "hyper_parameters": hparams, "multirec_model": "multimodal"}, path
    )
    with pytest.raises(MultirecError, match="fusion._target_ names 'shutil.copy'"):
        read_checkpoint(path)
    assert not (tmp_path / "c").exists()


def test_truncated_checkpoints_are_one_line_errors(tmp_path):
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable checkpoint") as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value)


def test_every_trusted_target_is_a_real_class_and_every_config_target_is_trusted():
    import importlib

    for target in TRUSTED_TARGETS:
        module, name = target.rsplit(".", 1)
        assert isinstance(getattr(importlib.import_module(module), name), type), target
    for group in ("fusion", "loss", "encoder/visual", "encoder/text"):
        for yaml in (Path(CONF) / group).glob("*.yaml"):
            target = OmegaConf.load(yaml).get("_target_")
            assert target is None or target in TRUSTED_TARGETS, f"{yaml}: {target}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs must be a whole number >= 1, got 'abc'"),
        ("datamodule.batch_size=0", "datamodule.batch_size must be a whole number >= 1"),
        ("model.dim=-1", "model.dim must be a whole number >= 1, got -1"),
        ("model.lr=-1", "model.lr must be a number > 0"),
        ("model.dropout=2", "model.dropout must be a number in [0, 1), got 2"),
        ("fusion.heads=0", "fusion.heads must be a whole number >= 1"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(tmp_path, override, message):
    cfg = compose_cfg("train", [override], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_settings(cfg)
    assert message in str(err.value)


def test_more_negatives_than_the_catalogue_is_refused(tiny_prepared):
    from multirec.data.datamodule import RecDataModule

    with pytest.raises(ConfigError, match="num_negatives must be a whole number from 1 to"):
        RecDataModule(tiny_prepared, num_negatives=100000)


def _run(args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MULTIREC_ROOT": str(root)}
    return subprocess.run(
        [sys.executable, "-m", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=check,
        timeout=900,
    )


def test_runs_started_together_keep_their_own_folders(tmp_path):
    env = {**os.environ, "MULTIREC_ROOT": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "multirec.evaluate",
                "data=tiny",
                "baseline=random",
                f"baseline.seed={seed}",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for p in procs:
        assert p.wait(timeout=900) == 0, p.stderr.read()
    runs = sorted((tmp_path / "outputs" / "runs" / "evaluate").iterdir())
    assert len(runs) == 2
    seeds = {
        json.loads((r / "evaluation.json").read_text())["source"]["baseline"]["seed"] for r in runs
    }
    assert seeds == {1, 2}


TRAIN = [
    "multirec.train",
    "data=tiny",
    "logger=none",
    "trainer.max_epochs=2",
    "datamodule.batch_size=32",
    "callbacks.last_checkpoint.every_n_train_steps=3",
    "~compare",
    "trainer.enable_progress_bar=false",
]


def _metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


def test_a_run_killed_mid_epoch_resumes_exactly(tmp_path):
    whole = tmp_path / "whole"
    _run([*TRAIN, f"hydra.run.dir={whole}"], tmp_path)
    killed = tmp_path / "killed"
    crash = _run(
        [
            *TRAIN,
            f"hydra.run.dir={killed}",
            "+callbacks.kill._target_=tests.plugins.KillAtStep",
            "+callbacks.kill.step=5",
        ],
        tmp_path,
        check=False,
    )
    assert crash.returncode == -9 and not (killed / "metrics.json").exists()
    last = killed / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3  # mid-epoch
    _run([*TRAIN, f"hydra.run.dir={tmp_path / 'resumed'}", f"ckpt_path={last}"], tmp_path)
    resumed = _metrics(killed)  # the run continued in its own folder
    expected = _metrics(whole)
    assert resumed.keys() == expected.keys()
    for k, v in expected.items():
        assert resumed[k] == pytest.approx(v, abs=1e-6), k
