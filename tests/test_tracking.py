"""W&B as a sweep uses it: one offline run per job, each with its own name, config, metrics
and results artifact, all in the sweep's group; run folders named from what ran."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

from hydra.core.override_parser.overrides_parser import OverridesParser
from wandb.proto import wandb_internal_pb2 as pb

from multirec import tracking
from multirec.tracking import describe

REPO = Path(__file__).resolve().parents[1]
BLOCK = 32768  # the offline file is a LevelDB-style log: 32 KiB blocks of framed records
HEADER = 7  # file header (":W&B", magic, version), then per record crc32, length, type


def records(path: Path) -> Iterator[pb.Record]:
    """Every record of a ``run-*.wandb`` file, fragments joined."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", path
    pos, pending = HEADER, b""
    while pos + HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += raw[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_run(path: Path) -> dict:
    """The run record, merged config, history and summary keys, and artifacts of one file."""
    run, config, history, summary, artifacts = None, {}, set(), set(), []
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            history |= {i.key or "/".join(i.nested_key) for i in r.history.item}
        elif kind == "summary":
            summary |= {i.key or "/".join(i.nested_key) for i in r.summary.update}
        elif kind == "artifact":
            artifacts.append((r.artifact.type, r.artifact.name))
    assert run is not None, path
    return {
        "name": run.display_name,
        "group": run.run_group,
        "job_type": run.job_type,
        "tags": list(run.tags),
        "config": {k: v.get("value", v) if isinstance(v, dict) else v for k, v in config.items()},
        "history": history,
        "summary": summary,
        "artifacts": artifacts,
    }


def test_a_two_job_sweep_gives_two_runs_with_their_own_configs(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "multirec.train",
            "experiment=fusion",  # as `make fusion` runs it
            "fusion=concat,gated",
            "seed=1",
            "data=tiny",
            "encoder/visual=none",  # composed: the runs must be named by these, not the pair
            "encoder/text=none",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "MULTIREC_ROOT": str(tmp_path), "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "already in progress" not in proc.stdout + proc.stderr

    (sweep,) = (tmp_path / "outputs" / "multirun" / "fusion").iterdir()
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert [d.name for d in jobs] == [
        "0_none+none_concat_softmax_trainer.max_epochs-1_seed1",
        "1_none+none_gated_softmax_trainer.max_epochs-1_seed1",
    ]
    for job in jobs:  # a job's checkpoint can be passed on: `ckpt_path=<folder>/...` parses
        path = f"{job}/checkpoints/best.ckpt"
        assert OverridesParser.create().parse_override(f"ckpt_path={path}").value() == path
    runs = {}
    for job in jobs:
        (offline,) = job.glob("wandb/offline-run-*/run-*.wandb")  # each job its own run
        runs[job.name.split("_")[2]] = read_run(offline)

    assert {r["group"] for r in runs.values()} == {f"fusion-{sweep.name}"}
    assert {r["job_type"] for r in runs.values()} == {"train"}
    for fusion, run in runs.items():
        assert run["name"] == f"none+none-{fusion}-softmax-trainer.max_epochs=1-seed1"
        assert {f"fusion:{fusion}", "encoder/visual:none", "encoder/text:none", "seed:1"} <= set(
            run["tags"]
        )
        config = run["config"]
        # the full resolved config, each job's own
        assert config["fusion"]["_target_"].endswith(f"{fusion.capitalize()}Fusion")
        assert config["choices"]["fusion"] == fusion
        assert config["seed"] == 1
        assert config["data"]["name"] == "sample_tiny"
        assert config["trainer"]["max_epochs"] == 1
        assert config["datamodule"]["num_negatives"] == 1
        assert config["choices"]["encoder/visual"] == "none"
        assert "valid/sampled/ndcg@10" in run["history"]
        assert {"test/sampled/ndcg@10", "test/full/ndcg@10"} <= run["summary"]
        assert [t for t, _ in run["artifacts"]] == ["results"]


def test_names_come_from_the_composed_encoders_not_the_pair_chosen():
    composed = {"encoder": "effnet_sbert", "encoder/visual": "effnet", "encoder/text": "none"}
    assert describe({**composed, "model": "multimodal", "fusion": "gated", "loss": "bce"}) == [
        "effnet+none",
        "gated",
        "bce",
    ]
    assert describe({**composed, "model": "vbpr", "fusion": "gated"}) == ["vbpr", "effnet+none"]
    assert describe({"logger": "wandb", "protocol": "sampled"}) == []  # a job training nothing


def test_a_long_run_folder_still_names_a_valid_artifact(tmp_path, monkeypatch):
    """A sweep job's folder (``N_`` plus a bounded name) behind the ``results-`` prefix passes
    W&B's 128-character limit on artifact names, which would fail the run at its very end."""
    result = tmp_path / "metrics.json"
    result.write_text("{}")
    logged = []
    run = SimpleNamespace(log_artifact=logged.append)
    monkeypatch.setattr(
        tracking, "_wandb_loggers", lambda loggers: [SimpleNamespace(experiment=run)]
    )
    name = f"results-12_{'x' * (tracking.MAX_NAME - 1)}~"
    tracking.log_files([], name, "results", [result])
    assert logged and len(logged[0].name) <= 128
