"""ViViT video encoders (Hugging Face `VivitModel`): the whole clip at once, two frames per tubelet."""

from __future__ import annotations

import torch
from transformers import VivitConfig, VivitModel

from merv.models.encoders.base import (
    HALF_MEAN,
    HALF_STD,
    VisionEncoder,
    load_hf_model,
    register_encoder,
    tubelet_tokens,
)


class VivitEncoder(VisionEncoder):
    """ViViT clip encoder; the CLS token is dropped and `config.tubelet_size[0]` frames merge into one token.

    The frame count is `config.num_frames`. The position embeddings are learned for exactly that many
    frames, so pretrained weights only load at the checkpoint's frame count.

    Args:
        config: the backbone architecture, including `num_frames` and `tubelet_size` (frames, height, width).
        pretrained: hub id or local directory to load weights from; None for random init.
        layer: hidden-state index returned (0 = embeddings, -1 = last block, before the final norm).

    Raises:
        ValueError: `config.num_frames` is not a multiple of the tubelet's frame count.
    """

    def __init__(self, config: VivitConfig, *, pretrained: str | None = None, layer: int = -2) -> None:
        frames_per_tubelet, patch_h, patch_w = config.tubelet_size
        super().__init__(
            num_frames=config.num_frames,
            image_size=config.image_size,
            mean=HALF_MEAN,
            std=HALF_STD,
            embed_dim=config.hidden_size,
            temporal_tokens=tubelet_tokens(config.num_frames, frames_per_tubelet, "ViViT"),
            grid=(config.image_size // patch_h, config.image_size // patch_w),
            layer=layer,
            pretrained=pretrained,
        )
        self.model = load_hf_model(VivitModel, config, pretrained)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        # The model takes (B, T, 3, S, S) and returns CLS + tubelet tokens time-major: (B, 1 + T'*N, D).
        hidden = self.model(pixel_values=pixels, output_hidden_states=[self.layer]).hidden_states[self.layer]
        return self.to_grid(hidden, prefix_tokens=1)  # (B, T', N, D)


def _config(
    image: int, patch: int, frames: int, hidden: int, intermediate: int, layers: int, heads: int
) -> VivitConfig:
    # Tubelets span 2 frames; gelu_fast and eps 1e-6 are the published Kinetics-400 checkpoint's settings.
    return VivitConfig(
        image_size=image,
        num_frames=frames,
        tubelet_size=[2, patch, patch],
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_act="gelu_fast",
        layer_norm_eps=1e-6,
    )


@register_encoder("vivit-b16x2-224")
def vivit_b16x2_224(pretrained: str | None = None, num_frames: int = 32) -> VivitEncoder:
    """ViViT-B/16x2 (joint space-time attention, Kinetics-400) at 224 px: 16 x 14x14 tokens of width 768 for 32 frames
    (weights: `google/vivit-b-16x2-kinetics400`)."""
    return VivitEncoder(_config(224, 16, num_frames, 768, 3072, 12, 12), pretrained=pretrained)


@register_encoder("vivit-tiny")
def vivit_tiny(pretrained: str | None = None, num_frames: int = 8) -> VivitEncoder:
    """CPU-sized random ViViT for tests: 32 px, tubelet 2x8x8, 4 x 4x4 tokens of width 32 for 8 frames."""
    return VivitEncoder(_config(32, 8, num_frames, 32, 64, 2, 2), pretrained=pretrained)
