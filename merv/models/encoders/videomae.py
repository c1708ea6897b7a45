"""VideoMAE video encoders (Hugging Face `VideoMAEModel`): the whole clip at once, two frames per tubelet."""

from __future__ import annotations

import torch
from transformers import VideoMAEConfig, VideoMAEModel

from merv.models.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VisionEncoder,
    load_hf_model,
    register_encoder,
    tubelet_tokens,
)


class VideoMAEEncoder(VisionEncoder):
    """VideoMAE clip encoder; it has no CLS token and merges `config.tubelet_size` frames per token.

    The frame count is `config.num_frames`. Its position table is fixed sin-cos (no weights), so pretrained
    weights load at any frame count that is a multiple of the tubelet size.

    Args:
        config: the backbone architecture, including `num_frames`.
        pretrained: hub id or local directory to load weights from; None for random init.
        layer: hidden-state index returned (0 = embeddings, -1 = last block, before any final norm).

    Raises:
        ValueError: `config.num_frames` is not a multiple of the tubelet size.
    """

    def __init__(self, config: VideoMAEConfig, *, pretrained: str | None = None, layer: int = -2) -> None:
        side = config.image_size // config.patch_size
        super().__init__(
            num_frames=config.num_frames,
            image_size=config.image_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            embed_dim=config.hidden_size,
            temporal_tokens=tubelet_tokens(config.num_frames, config.tubelet_size, "VideoMAE"),
            grid=(side, side),
            layer=layer,
            pretrained=pretrained,
        )
        self.model = load_hf_model(VideoMAEModel, config, pretrained, overrides=("num_frames",))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        # The model takes (B, T, 3, S, S) and returns tubelet tokens time-major: (B, T'*N, D).
        hidden = self.model(pixel_values=pixels, output_hidden_states=[self.layer]).hidden_states[self.layer]
        return self.to_grid(hidden)  # (B, T', N, D)


def _config(
    image: int, patch: int, frames: int, hidden: int, intermediate: int, layers: int, heads: int
) -> VideoMAEConfig:
    return VideoMAEConfig(
        image_size=image,
        patch_size=patch,
        num_frames=frames,
        tubelet_size=2,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        use_mean_pooling=False,
    )


@register_encoder("videomae-b16-224")
def videomae_b16_224(pretrained: str | None = None, num_frames: int = 16) -> VideoMAEEncoder:
    """VideoMAE ViT-B/16 at 224 px, tubelet 2: 8 x 14x14 tokens of width 768 for 16 frames
    (weights: `MCG-NJU/videomae-base`)."""
    return VideoMAEEncoder(_config(224, 16, num_frames, 768, 3072, 12, 12), pretrained=pretrained)


@register_encoder("videomae-tiny")
def videomae_tiny(pretrained: str | None = None, num_frames: int = 8) -> VideoMAEEncoder:
    """CPU-sized random VideoMAE for tests: 32 px, tubelet 2, 4 x 4x4 tokens of width 32 for 8 frames."""
    return VideoMAEEncoder(_config(32, 8, num_frames, 32, 64, 2, 2), pretrained=pretrained)
