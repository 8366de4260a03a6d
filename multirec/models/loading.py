"""Build the model's item inputs from feature caches, and load checkpoints safely.

A checkpoint records where it came from (prepared dataset fingerprint, encoder
configs, cache identities). Loading it against another dataset or other features is
refused with the difference named, instead of silently scoring mismatched items.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from multirec.data.dataset import PreparedDataset
from multirec.errors import ArtefactMismatchError, MultirecError
from multirec.features.cache import load_features
from multirec.features.extraction import ensure_cache
from multirec.models.items import ItemInputs
from multirec.models.recommender import MultimodalRecommender


def build_item_inputs(
    ds: PreparedDataset,
    encoder_cfg: DictConfig,
    cache_dir: str | Path,
    device: str = "cpu",
    num_workers: int = 2,
) -> tuple[ItemInputs, dict]:
    """Item table for the model, extracting any missing cache (``num_workers`` decode covers
    beside the encoder); also each side's cache identity."""
    sides: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    identity: dict[str, str | None] = {}
    for side in ("visual", "text"):
        path = ensure_cache(
            ds, encoder_cfg[side], Path(cache_dir), device=device, num_workers=num_workers
        )
        if path is None:
            sides[side], identity[side] = None, None
            continue
        feats, ok, attrs = load_features(path)
        sides[side] = (feats, ok)
        identity[side] = Path(path).name
    items = ItemInputs.build(
        ds.tag_index(), ds.numeric_features(), ds.seen_items(), sides["visual"], sides["text"]
    )
    return items, identity


def _comparable(hparams: dict) -> dict:
    """What must match to resume: every hyper-parameter and the data/feature identity,
    but not the Hydra choices of loggers, trainers or paths recorded beside them."""
    out = {k: v for k, v in hparams.items() if k != "provenance"}
    prov = hparams.get("provenance") or {}
    out.update({f"provenance.{k}": prov.get(k) for k in ("dataset", "caches", "encoder")})
    return out


def hparams_difference(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two models' hyper-parameters."""
    a, b = _comparable(saved), _comparable(current)
    return [
        f"{k}: checkpoint {a.get(k)!r} vs now {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def load_checkpoint(
    ckpt_path: str | Path, ds: PreparedDataset, cache_dir: str | Path, device: str = "cpu"
) -> MultimodalRecommender:
    """Load a trained model and attach the item features it was trained with."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise MultirecError(
            f"checkpoint {path} not found; pass ckpt_path= of a run's checkpoints/best.ckpt"
        )
    model = MultimodalRecommender.load_from_checkpoint(path, map_location="cpu")
    prov = model.hparams.provenance or {}
    if prov.get("dataset") != ds.fingerprint:
        raise ArtefactMismatchError(
            f"{path} was trained on prepared dataset {str(prov.get('dataset'))[:12]} but data= gives "
            f"{ds.fingerprint[:12]} ({ds.root}); use the data settings of the training run"
        )
    encoder_cfg = OmegaConf.create(prov["encoder"])
    items, identity = build_item_inputs(ds, encoder_cfg, cache_dir, device)
    if identity != prov.get("caches"):
        raise ArtefactMismatchError(
            f"{path} was trained with feature caches {prov.get('caches')} but found {identity}; "
            "re-extract with the training run's encoder settings"
        )
    model.bind(ds)
    model.attach_items(items, ds.interaction_matrix("train"))
    return model.to(device)
