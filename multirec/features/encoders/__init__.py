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

The modules hold one family each: :mod:`.base` (the base classes and the worker-side
helpers), :mod:`.loading` (reading model folders and checkpoints), :mod:`.timm_models`,
:mod:`.hf_image` and :mod:`.text`. Adding an encoder is a config file, plus at most a
small subclass in the module of its family, exported here.
"""

from multirec.features.encoders.base import (
    EXTRACTION_VERSION,
    Encoder,
    Preprocessing,
    TextEncoder,
    VisualEncoder,
)
from multirec.features.encoders.hf_image import HFImageEncoder
from multirec.features.encoders.text import HFTextEncoder, SentenceTransformerEncoder
from multirec.features.encoders.timm_models import EfficientNetLite0Encoder, TimmEncoder

__all__ = [
    "EXTRACTION_VERSION",
    "EfficientNetLite0Encoder",
    "Encoder",
    "HFImageEncoder",
    "HFTextEncoder",
    "Preprocessing",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "TimmEncoder",
    "VisualEncoder",
]
