"""Text encoders: a transformers model pooled here (BERT), or a sentence-transformers model
with the pooling it was trained with (Sentence-BERT)."""

from __future__ import annotations

import json

import torch
from torch import nn

from multirec.errors import ConfigError
from multirec.features.encoders.base import Preprocessing, TextEncoder, Tokenize
from multirec.features.encoders.loading import from_pretrained, load_errors, quiet_transformers


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
        precision: str = "auto",
    ) -> None:
        super().__init__(model, path, revision, batch_size, dtype, precision)
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
        precision: str = "auto",
    ) -> None:
        super().__init__(model, path, revision, batch_size, dtype, precision)
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
            load_errors(self.source.root, "a sentence-transformers model", self.slot),
            quiet_transformers(),
        ):
            st = SentenceTransformer(str(self.source.root), device="cpu", local_files_only=True)
        if self.max_length:
            st.max_seq_length = self.max_length
        # Whatever non-tensor keys this sentence-transformers version adds to its inputs
        # (6.x: the modality); older versions call preprocessing `tokenize`.
        prepare = getattr(st, "preprocess", None) or st.tokenize
        extras = {k: v for k, v in prepare(["probe"]).items() if not isinstance(v, torch.Tensor)}
        return _SentenceEmbedding(st, extras).eval().requires_grad_(False)
