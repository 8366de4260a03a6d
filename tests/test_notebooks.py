"""The notebooks run top to bottom on the tiny sample's trained model (nbclient, real kernel).

Their first code cell (tagged ``parameters``) reads ``MULTIREC_ROOT`` -- the folder holding
``outputs/`` -- and ``MULTIREC_CKPT``, so pointing them at the test's model is a matter of
environment variables.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str) -> list[str]:
    """Execute ``notebooks/<name>.ipynb`` in its folder; return every cell's text output."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert "parameters" in nb.cells[1].metadata.get("tags", [])
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text") or out.get("data", {}).get("text/plain", "") or "")
            if "image/png" in out.get("data", {}):
                texts.append("<png>")
    return texts


def test_quickstart(tiny_trained, tmp_path, monkeypatch):
    root, info = tiny_trained
    monkeypatch.setenv("MULTIREC_ROOT", str(root))
    monkeypatch.setenv("MULTIREC_REPORT_DIR", str(tmp_path / "report"))
    monkeypatch.delenv("MULTIREC_CKPT", raising=False)
    out = "\n".join(run_notebook("quickstart"))
    assert (tmp_path / "report" / "table2-test-sampled.md").is_file()
    assert f"checkpoint {info['ckpt']}" in out and "EffNet+SBERT" in out
    assert out.count("<png>") >= 5  # metrics x2, sampled vs full, modality weights, predictions
    assert "cold items among the top 10" in out


def test_modalities(tiny_trained, monkeypatch):
    root, info = tiny_trained
    monkeypatch.setenv("MULTIREC_ROOT", str(root))
    monkeypatch.setenv("MULTIREC_CKPT", info["ckpt"])
    out = "\n".join(run_notebook("modalities"))
    assert f"checkpoint {info['ckpt']}" in out
    # cover and text share prototypes by default: one fusion weight for both, a lift for each
    assert "w_content" in out and "delta_visual" in out and "lift_visual" in out
    assert "misleading" in out and "Mann-Whitney U p" in out  # the sample's ground truth was used
