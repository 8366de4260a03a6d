"""``python -m multirec.sample data=tiny|mini|small|pixelrec50k [out=DIR] [seed=0] [key=value ...]``

Writes a synthetic PixelRec-format dataset (see :mod:`multirec.data.synthetic`), so the
whole pipeline runs with no download.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from multirec.cli import user_errors
from multirec.data.synthetic import PRESETS, generate_sample
from multirec.data.synthetic.generate import SHARES
from multirec.errors import ConfigError


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
@user_errors
def main(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "data.sample") is None:
        raise ConfigError(
            f"data={cfg.data.name} is a dataset you downloaded, not a sample: "
            "use data=tiny|mini|small|pixelrec50k"
        )
    default_out = f"{cfg.paths.data_dir}/sample_{cfg.size}"
    preset = PRESETS.get(cfg.size)
    changed = [
        f"{k}={cfg[k]}"
        for k in SHARES
        if preset is not None and cfg[k] is not None and cfg[k] != getattr(preset, k)
    ]
    changed += [f"seed={cfg.seed}"] if cfg.seed != cfg.data.sample.seed else []
    if changed and str(cfg.out) == default_out:
        # training regenerates the preset's sample there, which would overwrite this one
        raise ConfigError(
            f"{default_out} holds the sample data={cfg.size} trains on; a sample with "
            f"{', '.join(changed)} goes to a folder of its own: add out=DIR"
        )
    out = generate_sample(
        cfg.out,
        size=cfg.size,
        seed=cfg.seed,
        misleading_share=cfg.misleading_share,
        broken_share=cfg.broken_share,
        vague_share=cfg.vague_share,
        covers=cfg.covers,
    )
    print(f"sample {cfg.size} (seed {cfg.seed}) written to {out}")


if __name__ == "__main__":
    main()
