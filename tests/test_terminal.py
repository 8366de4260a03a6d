"""What a user sees: a default training run on the tiny sample, through the real entry point
and its W&B logger (offline), prints its configuration, no warning it cannot act on, and
compact tables, sampled protocol first."""

from __future__ import annotations

import json
import re

from tests.test_sweep import run_module

COMPACT = ["recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20"]


def table_headers(text: str) -> list[tuple[str, list[str]]]:
    """(title, column names) of each table in ``text``."""
    lines = text.splitlines()
    return [
        (lines[i - 1].split(" (")[0], [c.strip() for c in line.split("|")[2:-1]])
        for i, line in enumerate(lines)
        if line.startswith("| model")
    ]


def test_a_default_run_is_quiet_and_ends_with_compact_tables(tmp_path):
    out = run_module("multirec.train", ["data=tiny", "trainer.max_epochs=2"], tmp_path)

    assert not [line for line in out.splitlines() if re.search("warn", line, re.IGNORECASE)]
    for chatter in ("litlogger", "FLOPs", "GPU available", "log_every_n_steps", "LeafSpec"):
        assert chatter not in out
    assert out.count("wandb sync") == 1  # our hint, not W&B's own as well
    assert "├── encoder: effnet_sbert" in out and "│   └── trainer.max_epochs=2" in out
    assert table_headers(out) == [("test/sampled", COMPACT), ("test/full", COMPACT)]

    (run_dir,) = (tmp_path / "outputs" / "runs" / "train").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/full/hitrate@5" in metrics  # the files keep every metric
    log = (run_dir / "train.log").read_text()
    assert "GPU available" in log  # library information goes to the log file
