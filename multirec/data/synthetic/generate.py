"""``generate_sample``: check the settings, draw the world, write a sample atomically."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from multirec.data.synthetic.presets import PRESETS, SamplePreset
from multirec.data.synthetic.rendering import write_covers
from multirec.data.synthetic.tables import write_tables
from multirec.data.synthetic.world import World, build_world
from multirec.errors import ConfigError
from multirec.io import atomic_dir

log = logging.getLogger(__name__)

# Recorded in ``_sample.json``. It names the file format of the samples, not a module:
# it stays fixed so that a seed keeps giving byte-identical files.
GENERATOR = "multirec.data.sample"
GENERATOR_VERSION = 1


def generate_sample(
    out: Path,
    size: str = "small",
    seed: int = 0,
    misleading_share: float | None = None,
    broken_share: float | None = None,
    vague_share: float | None = None,
    covers: bool = True,
    progress: bool = True,
) -> Path:
    """Write a PixelRec-format sample to ``out`` atomically and return ``out``.

    ``misleading_share`` and ``broken_share`` default to the preset's values (0.3 and
    0.02). ``covers=False`` writes only the tables (benchmarks of the tabular pipeline).
    ``out`` is replaced only if multirec created it. Big samples (``pixelrec50k``) draw
    their covers in spawned worker processes, so a script calling this for them needs the
    usual ``if __name__ == "__main__":`` guard.
    """
    if size not in PRESETS:
        raise ConfigError(
            f"unknown sample size {size!r} (key size); valid sizes: {', '.join(PRESETS)}"
        )
    preset = PRESETS[size]
    misleading = _share("misleading_share", misleading_share, preset.misleading_share)
    broken = _share("broken_share", broken_share, preset.broken_share)
    vague = _share("vague_share", vague_share, preset.vague_share)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer")

    out = Path(out)
    world = build_world(preset, seed, misleading, broken, vague)
    with atomic_dir(out) as tmp:
        write_tables(tmp, world)
        if covers:
            write_covers(tmp / "covers", world, seed, preset.cover_size, progress)
        settings = {
            "size": size,
            "seed": seed,
            "misleading_share": misleading,
            "broken_share": broken,
            "vague_share": vague,
            "covers": covers,
        }
        meta = _metadata(settings, preset, world)
        (tmp / "_sample.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info(
        "wrote %s sample to %s: %d users, %d items, %d interactions",
        size,
        out,
        preset.n_users,
        preset.n_items,
        len(world.inter_user),
    )
    return out


SHARES = ("misleading_share", "broken_share", "vague_share")


def is_current(root: Path, size: str = "small", **settings: Any) -> bool:
    """Whether ``root`` holds what :func:`generate_sample` would write there for ``size`` and
    ``settings``: its record names the same settings, a share left out or None meaning the
    preset's (so a sample written with other shares is not taken for the preset's), and
    the preset as it is defined now (so one drawn before a preset changed is not reused)."""
    try:
        made = json.loads((Path(root) / "_sample.json").read_text())
    except (OSError, ValueError):
        return False
    preset = PRESETS.get(size)
    if preset is None or made.get("size") != size or made.get("preset") != asdict(preset):
        return False
    wanted = {k: v for k, v in settings.items() if v is not None}
    for share in SHARES:
        wanted.setdefault(share, getattr(preset, share))
    return all(made.get(k) == v for k, v in wanted.items())


def read_world(root: Path) -> World:
    """The latent world the sample in ``root`` was drawn from (its topics and users' tastes,
    which no model sees), drawn again from the settings its ``_sample.json`` records.

    Refused with a one-line error for a folder multirec's generator did not write.
    """
    path = Path(root) / "_sample.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: no readable sample settings ({type(exc).__name__}); only a sample multirec "
            "generated (python -m multirec.sample) has a latent world to read"
        ) from None
    if meta.get("generator") != GENERATOR or meta.get("version") != GENERATOR_VERSION:
        raise ConfigError(
            f"{path}: written by {meta.get('generator')!r} version {meta.get('version')!r}, not "
            f"{GENERATOR!r} version {GENERATOR_VERSION}; generate the sample again"
        )
    if meta.get("size") not in PRESETS:
        raise ConfigError(f"{path}: unknown sample size {meta.get('size')!r}")
    return build_world(
        PRESETS[meta["size"]],
        meta["seed"],
        meta["misleading_share"],
        meta["broken_share"],
        meta.get("vague_share", 0.0),  # a record without it: a sample without vague texts
    )


def _share(key: str, value: float | None, default: float) -> float:
    """``value`` as a share in [0, 1] (``None``: the preset's ``default``)."""
    if value is None:
        return default
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = math.nan
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"{key}={value!r} is not a share; use a number between 0 and 1 (or null)")
    return share


def _metadata(settings: dict[str, Any], preset: SamplePreset, world: World) -> dict[str, Any]:
    """The content of ``_sample.json``: callers compare ``settings`` to reuse a sample."""
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        **settings,
        "preset": asdict(preset),
        "n_users": preset.n_users,
        "n_items": preset.n_items,
        "n_interactions": int(len(world.inter_user)),
    }
