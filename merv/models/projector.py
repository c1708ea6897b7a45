"""Per-encoder alignment to a common token grid and projection to the LLM width."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def align_features(features: torch.Tensor, temporal_tokens: int, tokens_per_frame: int) -> torch.Tensor:
    """Pool `(B, T', N, D)` encoder features to `(B, T, h*w, D)` with no parameters.

    Space is pooled adaptively to a square `h*w = tokens_per_frame` grid; time is pooled (or repeated,
    when T' < T) adaptively too, so encoders with different temporal token counts line up.
    """
    b, t_in, n, d = features.shape
    side_in, side_out = math.isqrt(n), math.isqrt(tokens_per_frame)
    if side_in * side_in != n or side_out * side_out != tokens_per_frame:
        raise ValueError(f"token grids must be square, got N={n} and tokens_per_frame={tokens_per_frame}")
    if (t_in, n) == (temporal_tokens, tokens_per_frame):
        return features
    x = features.reshape(b, t_in, side_in, side_in, d).permute(0, 4, 1, 2, 3)  # (B, D, T', h', w')
    x = F.adaptive_avg_pool3d(x, (temporal_tokens, side_out, side_out))  # (B, D, T, h, w)
    return x.flatten(3).permute(0, 2, 3, 1)  # (B, T, h*w, D)


class Projector(nn.Module):
    """Maps one encoder's features to the LLM width: a Linear layer or a 2-layer GELU MLP."""

    def __init__(self, in_dim: int, out_dim: int, kind: Literal["linear", "mlp"] = "mlp") -> None:
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        else:
            raise ValueError(f"unknown projector kind {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
