"""``python -m multirec.extract [encoder=effnet_sbert] [data=small] [key=value ...]``

Prepares the dataset if needed, then builds (or finds) the feature cache of each side
of the chosen encoder pair, prints where it is and records it in the run directory
(``caches.json``). Under ``torchrun`` the items are sharded over the processes.
"""

from __future__ import annotations

# first: it sets OpenMP's environment, which torch reads once when the imports below load it
from multirec.runtime import apply_thread_policy

# isort: split
from pathlib import Path

import hydra
from omegaconf import DictConfig

from multirec.cli import user_errors
from multirec.features.distributed import init_distributed, is_rank_zero, rank_zero_first
from multirec.features.extraction import ensure_cache
from multirec.io import atomic_write_json
from multirec.pipeline.stages import ensure_prepared


@hydra.main(version_base="1.3", config_path="../conf", config_name="extract")
@user_errors
def main(cfg: DictConfig) -> None:
    apply_thread_policy(cfg.threads, cfg.device)
    init_distributed(cfg.device)
    dataset = rank_zero_first(lambda: ensure_prepared(cfg.data, cfg.paths, cfg.progress))
    caches: dict[str, str | None] = {"dataset": str(dataset.root)}
    for side in ("visual", "text"):
        path = ensure_cache(
            dataset,
            cfg.encoder[side],
            Path(cfg.paths.cache_dir),
            device=cfg.device,
            num_workers=cfg.num_workers,
            progress=cfg.progress,
            rebuild=cfg.rebuild,
        )
        caches[side] = None if path is None else str(path)
        if is_rank_zero():
            print(f"{side:<6} {path if path is not None else 'none'}")
    if is_rank_zero():
        atomic_write_json(Path(cfg.paths.output_dir) / "caches.json", caches)


if __name__ == "__main__":
    main()
