"""Fusion of the modality tokens {p_u, q_i, p_v, p_t, p_cat, p_num} into one vector f_ui.

Each module takes tokens ``[N, M, d]`` and returns the fused vectors ``[N, out_dim]`` together
with per-modality weights ``[N, M]`` (gated and attention fusion; ``None`` for concatenation),
so reports can show what the model attends to. The weights travel with the output rather
than as module state: a caller scoring in chunks gets every chunk's weights.
"""

from __future__ import annotations

import torch
from torch import nn

from multirec.errors import ConfigError

Fused = tuple[torch.Tensor, torch.Tensor | None]


class Fusion(nn.Module):
    """Base of every fusion module: built with the token dimension and count, says ``out_dim``."""

    def __init__(self, dim: int, n_tokens: int, out_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.n_tokens = n_tokens
        self.out_dim = out_dim

    def forward(self, tokens: torch.Tensor) -> Fused:
        """``[N, M, d]`` tokens -> (``[N, out_dim]`` fused vectors, ``[N, M]`` weights or None)."""
        raise NotImplementedError

    def offset(self) -> nn.Parameter | None:
        """The parameter that adds one and the same vector to every fused output, if any.

        A two-tower item side freezes it: the same vector added to every item shifts all of
        a user's scores equally, so a ranking loss gets no gradient for it but rounding
        noise, which Adam would turn into full-size steps.
        """
        return None


class ConcatFusion(Fusion):
    """MLP over the concatenated tokens: every modality weighted equally a priori."""

    def __init__(self, dim: int, n_tokens: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__(dim, n_tokens, out_dim=dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim * n_tokens, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )

    def forward(self, tokens: torch.Tensor) -> Fused:
        return self.mlp(tokens.flatten(1)), None

    def offset(self) -> nn.Parameter | None:
        return self.mlp[-1].bias


class GatedFusion(Fusion):
    """Learned softmax weights over modalities, computed from the tokens themselves."""

    def __init__(self, dim: int, n_tokens: int, dropout: float = 0.1) -> None:
        super().__init__(dim, n_tokens, out_dim=dim)
        self.gate = nn.Sequential(nn.Linear(dim * n_tokens, n_tokens))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> Fused:
        weights = torch.softmax(self.gate(tokens.flatten(1)), dim=-1)
        return self.dropout((weights.unsqueeze(-1) * tokens).sum(1)), weights.detach()


class AttentionFusion(Fusion):
    """Multi-head self-attention over the modality tokens (the paper's fusion).

    Each layer is attention + residual + layer norm, then a feed-forward block with
    residual + layer norm. Pooling: ``mean`` of the output tokens, ``cls`` (a learned
    token prepended to the sequence), or ``flatten`` (all tokens concatenated).
    """

    def __init__(
        self,
        dim: int,
        n_tokens: int,
        heads: int = 4,
        layers: int = 1,
        pooling: str = "mean",
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dim, n_tokens, out_dim=dim * n_tokens if pooling == "flatten" else dim)
        if pooling not in ("mean", "cls", "flatten"):
            raise ConfigError(f"fusion.pooling={pooling!r} is unknown; valid: mean, cls, flatten")
        if dim % heads:
            raise ConfigError(f"fusion.heads={heads} must divide model.dim={dim}")
        self.pooling = pooling
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            for _ in range(layers)
        )
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.ff = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
            )
            for _ in range(layers)
        )
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if pooling == "cls" else None

    def forward(self, tokens: torch.Tensor) -> Fused:
        x = tokens
        if self.cls is not None:
            x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1)
        weights = None
        for attn, n1, ff, n2 in zip(self.attn, self.norm1, self.ff, self.norm2, strict=True):
            # weights are only kept for inspection (eval); training takes the fused kernel
            h, weights = attn(x, x, x, need_weights=not self.training, average_attn_weights=True)
            x = n1(x + h)
            x = n2(x + ff(x))
        if weights is None:
            return self._pool(x), None
        # last layer: with a CLS token, what the CLS query attends to among the modalities
        # (renormalised); otherwise the attention each modality receives, averaged over queries
        if self.cls is not None:
            received = weights[:, 0, 1:]
            received = received / received.sum(-1, keepdim=True)
        else:
            received = weights.mean(1)
        return self._pool(x), received.detach()

    def offset(self) -> nn.Parameter | None:
        return self.norm2[-1].bias

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return x[:, 0]
        if self.pooling == "flatten":
            return x.flatten(1)
        return x.mean(1)
