"""Open trained checkpoints without trusting them.

A checkpoint may come from someone else, so opening one must never run code:

* it is read with ``torch.load(..., weights_only=True)`` (tensors and plain data only);
* the model class is named by its registry name (``multirec.models.neural.MODELS``), never
  by an import path;
* every ``_target_`` in its stored settings (fusion, loss, encoders) must name one of
  multirec's own classes from :data:`TRUSTED_TARGETS`, or loading stops with one line.

A checkpoint also records where it came from (prepared dataset fingerprint, encoder
configs, cache identities); loading it against other data or features is refused with
the difference named instead of silently scoring mismatched items.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

from multirec.data.dataset import PreparedDataset
from multirec.errors import ArtefactMismatchError, DataError, MultirecError

if TYPE_CHECKING:  # Lightning and the encoder stack take seconds to import: a bad path fails first
    from multirec.models.neural import NeuralRecommender


TRUSTED_TARGETS: frozenset[str] = frozenset(
    f"multirec.{path}"
    for path in (
        "models.fusion.ConcatFusion",
        "models.fusion.GatedFusion",
        "models.fusion.AttentionFusion",
        "models.losses.BCELoss",
        "models.losses.BPRLoss",
        "models.losses.SoftmaxLoss",
        "models.losses.BCEContrastiveLoss",
        "features.encoders.timm_models.EfficientNetLite0Encoder",
        "features.encoders.timm_models.TimmEncoder",
        "features.encoders.hf_image.HFImageEncoder",
        "features.encoders.text.HFTextEncoder",
        "features.encoders.text.SentenceTransformerEncoder",
    )
)
"""The only classes a ``_target_`` read from a checkpoint or a run directory may name. Plain
strings, so that reading a checkpoint's provenance imports neither Lightning nor encoders."""


def _targets(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            where = f"{key}.{k}" if key else str(k)
            if k == "_target_":
                yield where, v
            else:
                yield from _targets(v, where)
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from _targets(v, f"{key}[{i}]")


def check_targets(node: Any, source: Path | str) -> None:
    """Refuse stored settings whose ``_target_`` is not one of multirec's own classes."""
    for where, target in _targets(node):
        if target not in TRUSTED_TARGETS:
            raise MultirecError(
                f"{source}: {where} names {target!r}, which is not one of multirec's classes; "
                "refusing to build it (a checkpoint must not run code); retrain the model "
                "with multirec"
            )


def _load(path: Path | str) -> dict[str, Any]:
    """The checkpoint file read as data only: tensors and plain containers, no code runs."""
    path = Path(path)
    if not path.is_file():
        raise MultirecError(
            f"checkpoint {path} not found; pass ckpt_path= of a run's checkpoints/best.ckpt"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # a pickled class, not garbage
            raise DataError(
                f"{path} holds objects other than tensors and plain data, so it is not opened "
                "(it could run code); use a checkpoint that multirec.train wrote"
            ) from None
        raise DataError(
            f"{path} is not a readable checkpoint (not a torch file); use another checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(
            f"{path} is not a readable checkpoint (truncated or corrupt: "
            f"{type(exc).__name__}); use another checkpoint or retrain"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise DataError(f"{path} is not a Lightning checkpoint written by multirec.train")
    return ckpt


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The checkpoint's contents, its stored settings checked to name only multirec's classes."""
    ckpt = _load(path)
    check_targets(ckpt.get("hyper_parameters") or {}, path)
    return ckpt


def read_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """Only the model weights of a checkpoint (tensors: nothing in them is ever built)."""
    return _load(path)["state_dict"]


def checkpoint_provenance(ckpt_path: Path | str) -> dict[str, Any]:
    """What a multirec checkpoint records about its data and features."""
    ckpt = read_checkpoint(ckpt_path)
    prov = (ckpt.get("hyper_parameters") or {}).get("provenance")
    if not prov or "dataset" not in prov:
        raise DataError(
            f"{ckpt_path} records no training provenance: it was not written by multirec.train"
        )
    return dict(prov)


def find_prepared(prepared_dir: Path | str, fingerprint: str, hint: str = "") -> PreparedDataset:
    """The prepared dataset with ``fingerprint`` under ``prepared_dir`` (named ``<name>-<fp[:12]>``)."""
    for root in sorted(Path(prepared_dir).glob(f"*-{fingerprint[:12]}")):
        ds = PreparedDataset.load(root)
        if ds.fingerprint == fingerprint:
            return ds
    raise DataError(
        f"no prepared dataset {fingerprint[:12]} under {prepared_dir}; prepare it with the "
        f"training run's data settings{hint} or set paths.prepared_dir"
    )


def checkpoint_dataset(ckpt_path: Path | str, prepared_dir: Path | str) -> PreparedDataset:
    """The prepared dataset a checkpoint was trained on (cheap: the model is not built)."""
    prov = checkpoint_provenance(ckpt_path)
    data = (prov.get("choices") or {}).get("data")
    return find_prepared(
        prepared_dir,
        str(prov["dataset"]),
        f" (python -m multirec.prepare data={data})" if data else "",
    )


def build_from_checkpoint(ckpt: dict[str, Any], path: Path | str) -> NeuralRecommender:
    """The model a checkpoint holds, weights loaded, before any data is attached."""
    from multirec.models.catalog import MODELS

    name = ckpt.get("multirec_model")
    if name not in MODELS:
        raise DataError(
            f"{path} names model {name!r}, not one of multirec's ({', '.join(sorted(MODELS))}); "
            "use a checkpoint that multirec.train wrote"
        )
    try:
        model = MODELS[name](**ckpt["hyper_parameters"])
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise DataError(
            f"{path} does not fit model {name!r} ({str(exc).splitlines()[0]}); "
            "it was written by another multirec version: retrain"
        ) from None
    return model


def load_checkpoint(
    ckpt_path: str | Path, ds: PreparedDataset, cache_dir: str | Path, device: str = "cpu"
) -> NeuralRecommender:
    """Load a trained model and attach the item features it was trained with."""
    from multirec.pipeline.stages import build_item_inputs

    path = Path(ckpt_path)
    ckpt = read_checkpoint(path)
    model = build_from_checkpoint(ckpt, path)
    prov = model.hparams.provenance or {}
    if prov.get("dataset") != ds.fingerprint:
        raise ArtefactMismatchError(
            f"{path} was trained on prepared dataset {str(prov.get('dataset'))[:12]} but data= gives "
            f"{ds.fingerprint[:12]} ({ds.root}); use the data settings of the training run"
        )
    items, identity = build_item_inputs(ds, OmegaConf.create(prov["encoder"]), cache_dir, device)
    if identity != prov.get("caches"):
        raise ArtefactMismatchError(
            f"{path} was trained with feature caches {prov.get('caches')} but found {identity}; "
            "re-extract with the training run's encoder settings"
        )
    model.attach(ds, items)
    return model.to(device)


def load_model(
    ckpt_path: Path | str, prepared_dir: Path | str, cache_dir: Path | str, device: str = "cpu"
) -> tuple[NeuralRecommender, PreparedDataset]:
    """A trained model with its item features attached, and the dataset it was trained on."""
    ds = checkpoint_dataset(ckpt_path, prepared_dir)
    return load_checkpoint(ckpt_path, ds, cache_dir, device).eval(), ds


def _comparable(hparams: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume: every hyper-parameter and the data/feature identity,
    but not the Hydra choices of loggers, trainers or paths recorded beside them."""
    out = {k: v for k, v in hparams.items() if k != "provenance"}
    prov = hparams.get("provenance") or {}
    out.update({f"provenance.{k}": prov.get(k) for k in ("dataset", "caches", "encoder")})
    return out


def check_resume(ckpt_path: str | Path, model: NeuralRecommender) -> None:
    """Refuse to resume from a checkpoint whose configuration differs from ``model``'s."""
    ckpt = read_checkpoint(ckpt_path)
    saved = _comparable(dict(ckpt.get("hyper_parameters", {})))
    now = _comparable(dict(model.hparams))
    diff = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
        for k in sorted(set(saved) | set(now))
        if saved.get(k) != now.get(k)
    ]
    if ckpt.get("multirec_model") != model.registry_name:
        diff.insert(
            0, f"model: checkpoint {ckpt.get('multirec_model')!r} vs now {model.registry_name!r}"
        )
    if diff:
        raise ArtefactMismatchError(
            f"cannot resume from {ckpt_path}: configuration differs ({'; '.join(diff)})"
        )
    optimiser = model.configure_optimizers()
    if not isinstance(optimiser, torch.optim.Optimizer):
        return  # Lightning's other forms (lists, schedulers): left to Lightning to restore
    saved_groups = _group_sizes(ckpt.get("optimizer_states") or [])
    now_groups = _group_sizes([optimiser.state_dict()])
    if saved_groups and saved_groups != now_groups:
        raise ArtefactMismatchError(
            f"cannot resume from {ckpt_path}: its optimiser state groups the parameters as "
            f"{saved_groups}, this version of multirec as {now_groups} (the checkpoint was "
            "written by another version); resume with that version, or start a new run"
        )


def _group_sizes(optimizer_states: list[dict[str, Any]]) -> list[int]:
    """Parameters per group of the first optimiser's state (empty: no state saved)."""
    if not optimizer_states:
        return []
    return [len(g["params"]) for g in optimizer_states[0].get("param_groups", [])]
