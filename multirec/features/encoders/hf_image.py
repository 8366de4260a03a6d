"""transformers vision models (CLIP's image tower, DINOv2) with their own image processors."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import nn

from multirec.errors import ConfigError
from multirec.features.encoders.base import Preprocessing, VisualEncoder
from multirec.features.encoders.loading import from_pretrained, load_errors


class HFImageTransform:
    """A Hugging Face image processor applied to one image."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.processor(images=img, return_tensors="pt")["pixel_values"][0]


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
        precision: str = "auto",
    ) -> None:
        super().__init__(model, path, revision, batch_size, dtype, precision)
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

        with load_errors(self.source.root, "an image processor", self.slot):
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
