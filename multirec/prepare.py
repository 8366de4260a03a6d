"""``python -m multirec.prepare [data=pixelrec data.root=/path] [key=value ...]``

Validates a PixelRec-format directory and writes the prepared dataset (or finds the
existing one with the same fingerprint), then prints its statistics.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from multirec.cli import user_errors
from multirec.data.dataset import PreparedDataset
from multirec.pipeline.stages import ensure_prepared


def summary(ds: PreparedDataset) -> str:
    """A human-readable table of a prepared dataset's size and of every repair made."""
    m = ds.manifest
    n_inter = sum(m["split_sizes"].values())
    lines = [
        f"prepared dataset  {ds.root}",
        f"fingerprint       {ds.fingerprint[:12]}",
        f"users             {ds.n_users:,}",
        f"items             {ds.n_items:,}",
        f"interactions      {n_inter:,}  (density {n_inter / max(ds.n_users * ds.n_items, 1):.4%})",
        "splits            "
        + ", ".join(f"{k} {m['split_sizes'][k]:,}" for k in ("train", "valid", "test")),
        f"tags              {ds.n_tags - 1:,} (+ shared rare id)",
        "counts:",
    ]
    lines += [f"  {k:<38} {v:,}" for k, v in m["counts"].items() if v]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
@user_errors
def main(cfg: DictConfig) -> None:
    print(summary(ensure_prepared(cfg.data, cfg.paths)))


if __name__ == "__main__":
    main()
