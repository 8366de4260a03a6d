"""The encoder base classes and the preprocessing that runs in DataLoader workers.

Everything a :class:`Preprocessing` holds is pickled to the workers, so its callables are
module-level classes and functions, not closures.
"""

from __future__ import annotations

import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from multirec.data.dataset import PreparedDataset
from multirec.errors import ConfigError
from multirec.features import sources
from multirec.features.cache import EMPTY_TEXT, MISSING, OK, STORAGE_DTYPES, UNDECODABLE
from multirec.features.encoders.loading import load_errors
from multirec.runtime.devices import PRECISIONS, inference_precision

# Bump when the extraction code changes what it computes for the same model files.
EXTRACTION_VERSION = 1

# The package whose exported names stand for its encoder classes in cache identities.
PACKAGE = __name__.rpartition(".")[0]


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


# -- the base classes ----------------------------------------------------------------------
def class_path(cls: type) -> str:
    """``module.qualname`` of an encoder class, with :data:`PACKAGE` as the module of the
    classes it exports: the path is part of the cache key, and which of the package's
    modules defines a class does not change the features."""
    module = cls.__module__
    package = sys.modules.get(PACKAGE)
    if module.startswith(f"{PACKAGE}.") and getattr(package, cls.__qualname__, None) is cls:
        module = PACKAGE
    return f"{module}.{cls.__qualname__}"


class Encoder(ABC):
    """A frozen model that maps an item's cover or text to a feature vector."""

    modality: ClassVar[str]  # "visual" or "text": which config slot and which item input

    def __init__(
        self,
        model: str,
        path: str | None,
        revision: str | None,
        batch_size: int,
        dtype: str,
        precision: str,
    ) -> None:
        self.model = model
        self.path = None if path in (None, "") else str(path)
        self.revision = revision
        self.batch_size = int(batch_size)
        self.dtype = dtype
        self.precision = precision
        if precision not in PRECISIONS:
            raise ConfigError(
                f"{self.slot}.precision={precision!r} is unknown; valid: {', '.join(PRECISIONS)}"
            )
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

    def compute_precision(self, device: torch.device) -> str:
        """The dtype the network computes in on ``device`` (``precision``, ``auto`` resolved)."""
        return inference_precision(self.precision, device.type)

    def identity(self, device: torch.device) -> dict:
        """What the features computed on ``device`` depend on; its fingerprint names the
        cache file. The precision is resolved, since ``auto`` differs between machines."""
        return {
            "encoder": class_path(type(self)),
            "modality": self.modality,
            "model": self.model,
            "revision": self.revision,
            "files": sources.model_digests(self.source.root),
            "options": self.options(),
            "dtype": self.dtype,
            "precision": self.compute_precision(device),
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

        with load_errors(self.source.root, "a tokenizer", self.slot):
            return AutoTokenizer.from_pretrained(str(self.source.root))

    def _preprocessing(self, tokenize: Tokenize, describe: dict) -> Preprocessing:
        return Preprocessing(text_input, tokenize, describe, "probe")
