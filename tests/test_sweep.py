"""The paper sweep end to end, as ``make sweep && make table`` runs it, on the tiny sample
with tiny local encoders: one Hydra multirun over two encoder pairs and two seeds, then
``multirec.report`` over its outputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_encoders import save_tiny_bert, save_tiny_clip, save_tiny_dinov2

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, args: list[str], root: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "MULTIREC_ROOT": str(root), "WANDB_MODE": "offline"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def test_paper_sweep_extracts_once_per_encoder_and_reports_both_pairs(tmp_path):
    models = tmp_path / "models"
    save_tiny_clip(models / "clip")
    save_tiny_dinov2(models / "dino")
    save_tiny_bert(models / "bert")
    log = run_module(
        "multirec.train",
        [
            "experiment=paper_encoders",
            "encoder=clip_bert,dino_bert",
            "seed=1,2",  # replace the experiment's sweep lists
            "data=tiny",
            "logger=none",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            # a local copy per visual encoder in one sweep: the folder named by the pair's choice
            f"encoder.visual.path={models}/${{hydra:runtime.choices.encoder/visual}}",
            f"encoder.text.path={models}/bert",
        ],
        tmp_path,
    )

    # the sweep ends with one compact table per protocol, a row per job named by what varies
    # in it; no job prints a table of its own
    assert log.count("test/sampled (") == 1 and log.count("test/full (") == 1
    summary = log[log.index("test/sampled (") :]
    for encoder in ("clip_bert", "dino_bert"):
        for seed in (1, 2):
            assert summary.count(f"| encoder={encoder} seed={seed} ") == 2, summary

    sweeps = list((tmp_path / "outputs" / "multirun" / "paper_encoders").iterdir())
    assert len(sweeps) == 1, sweeps  # one sweep folder, named after the experiment
    runs = [json.loads(p.read_text()) for p in sweeps[0].rglob("evaluation.json")]
    assert sorted((r["choices"]["encoder"], r["seed"]) for r in runs) == [
        ("clip_bert", 1),
        ("clip_bert", 2),
        ("dino_bert", 1),
        ("dino_bert", 2),
    ]
    assert {r["choices"]["fusion"] for r in runs} == {"attention"}
    assert {r["task_name"] for r in runs} == {"paper_encoders"}

    # Features once per encoder: three caches (CLIP, DINOv2, BERT) for four runs, so three
    # extractions and five cache hits among the eight lookups.
    used = {r["caches"][side] for r in runs for side in ("visual", "text")}
    assert len(used) == 3
    assert sorted(p.name for p in (tmp_path / "outputs" / "cache").glob("*.h5")) == sorted(used)
    assert log.count("feature cache written") == 3
    assert log.count("cache hit") == 5

    run_module("multirec.report", [f"runs={tmp_path / 'outputs'}"], tmp_path)
    report = tmp_path / "outputs" / "report"
    with open(report / "table2-test-sampled.csv", newline="") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    models_rows = {m: r for m, r in rows.items() if r["kind"] == "model"}
    assert set(models_rows) == {"CLIP+BERT", "DINO+BERT"}
    for row in models_rows.values():
        assert row["n_seeds"] == "2" and row["ndcg@10_std"] != ""
    assert {"Random", "MostPopular"} <= {m for m, r in rows.items() if r["kind"] == "baseline"}
    assert "CLIP+BERT" in (report / "report.md").read_text()
