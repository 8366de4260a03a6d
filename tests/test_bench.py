"""The benchmark entry points take Hydra-style key=value settings and answer --help at once."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multirec.bench.common import bench_settings

REPO = Path(__file__).resolve().parents[1]
KEYS = {"steps": (30, "timed steps"), "busy": ([0, 1], "busy cores"), "validate": (True, "")}


@pytest.mark.parametrize(
    "name", ["data", "features", "evaluation", "training", "two_tower", "reference"]
)
def test_help_prints_usage_and_keys_without_starting_the_job(name, tmp_path):
    if name == "reference" and importlib.util.find_spec("recbole") is None:
        pytest.skip("the reference extra is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", f"multirec.bench.{name}", "--help"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"python -m multirec.bench.{name}" in proc.stdout
    assert "settings (key=value" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # nothing generated, nothing measured


def test_key_value_settings_override_the_defaults():
    args = bench_settings(["steps=5", "busy=[0]", "validate=false"], KEYS, None)
    assert (args.steps, args.busy, args.validate) == (5, [0], False)
    assert bench_settings([], KEYS, None).busy == [0, 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["step=5"], "step"),
        (["steps=many"], "steps"),
        (["--steps", "5"], "'--steps' is not key=value"),
    ],
)
def test_bad_settings_are_one_line_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_settings(argv, KEYS, None)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
