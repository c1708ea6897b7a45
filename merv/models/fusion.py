"""Fusion of several projected encoder sequences into one visual sequence for the LLM."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

FusionKind = Literal["cross-attention", "sum", "concat-channel", "concat-sequence"]


class Fusion(nn.Module):
    """Base: `forward(list of (B, L, D)) -> ((B, L_v, D), per-encoder weights (B, E) or None)`.

    Args:
        dim: width D of every projected sequence (the LLM width).
        num_encoders: number of sequences E.
    """

    def __init__(self, dim: int, num_encoders: int) -> None:
        super().__init__()
        self.num_encoders = num_encoders

    def output_length(self, length: int) -> int:
        """Fused length L_v for per-encoder sequences of `length` tokens."""
        return length

    @staticmethod
    def _mix(xs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(xs, dim=1)  # (B, E, L, D)
        return (weights.to(stacked.dtype)[:, :, None, None] * stacked).sum(dim=1)  # (B, L, D)


class CrossAttentionFusion(Fusion):
    """MERV's fusion: a learned query attends over one key per encoder, the mean of its sequence.

    The softmax weights mix the full sequences. Keys are projected without bias: a key bias shifts every
    encoder's score by the same amount, which softmax ignores, so it would never receive a gradient.
    The query lives directly in the attention space for the same reason (a query projection applied to
    a learned vector is redundant with the vector).
    """

    def __init__(self, dim: int, num_encoders: int) -> None:
        super().__init__(dim, num_encoders)
        self.query = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.key = nn.Linear(dim, dim, bias=False)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self.key(torch.stack([x.mean(dim=1) for x in xs], dim=1))  # (B, E, D)
        scores = keys @ self.query.to(keys.dtype) / math.sqrt(self.query.numel())  # (B, E)
        weights = scores.float().softmax(dim=-1)
        return self._mix(xs, weights), weights


class SumFusion(Fusion):
    """Static learned weights (softmax over one logit per encoder), the same for every sample."""

    def __init__(self, dim: int, num_encoders: int) -> None:
        super().__init__(dim, num_encoders)
        self.logits = nn.Parameter(torch.zeros(num_encoders))

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.logits.float().softmax(dim=-1).expand(xs[0].shape[0], -1)
        return self._mix(xs, weights), weights


class SingleEncoderFusion(Fusion):
    """One encoder: its sequence passes through unchanged with weight 1, and there are no parameters.

    Weighted fusions (cross-attention, sum) take a softmax over one score per encoder; over a single
    encoder that is always 1, so their parameters would never receive a gradient while still being
    trained (and shrunk by weight decay). Single-encoder models get this instead.
    """

    def __init__(self, dim: int, num_encoders: int = 1) -> None:
        if num_encoders != 1:
            raise ValueError(f"SingleEncoderFusion fuses exactly one encoder, got {num_encoders}")
        super().__init__(dim, num_encoders)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        (x,) = xs
        return x, x.new_ones(x.shape[0], 1, dtype=torch.float32)


class ConcatChannelFusion(Fusion):
    """Concatenate the encoders along channels, then a linear layer back to the LLM width."""

    def __init__(self, dim: int, num_encoders: int) -> None:
        super().__init__(dim, num_encoders)
        self.proj = nn.Linear(dim * num_encoders, dim)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, None]:
        return self.proj(torch.cat(xs, dim=-1)), None


class ConcatSequenceFusion(Fusion):
    """Concatenate the encoders along the sequence: L_v = E * L, no parameters."""

    def output_length(self, length: int) -> int:
        return length * self.num_encoders

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, None]:
        return torch.cat(xs, dim=1), None


_FUSIONS: dict[str, type[Fusion]] = {
    "cross-attention": CrossAttentionFusion,
    "sum": SumFusion,
    "concat-channel": ConcatChannelFusion,
    "concat-sequence": ConcatSequenceFusion,
}


def build_fusion(kind: FusionKind, dim: int, num_encoders: int) -> Fusion:
    """The fusion `kind` for `num_encoders` sequences of width `dim`.

    A weighted fusion (cross-attention, sum) of a single encoder is a `SingleEncoderFusion`: with one
    encoder its weight is always 1 and its parameters could never learn.
    """
    if kind not in _FUSIONS:
        raise ValueError(f"unknown fusion {kind!r}; choose from {sorted(_FUSIONS)}")
    if num_encoders == 1 and kind in ("cross-attention", "sum"):
        return SingleEncoderFusion(dim, num_encoders)
    return _FUSIONS[kind](dim, num_encoders)
