"""DINOv2 vision towers (Hugging Face `Dinov2Model`, `Dinov2WithRegistersModel`), applied frame by frame."""

from __future__ import annotations

import torch
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from merv.models.encoders.base import IMAGENET_MEAN, IMAGENET_STD, VisionEncoder, load_hf_model, register_encoder


class Dinov2Encoder(VisionEncoder):
    """DINOv2 image encoder; the CLS token and any register tokens are dropped, leaving the patch grid.

    The published checkpoints carry a position table for 518 px (`config.image_size`); the model
    interpolates it to `image_size` on every call, so the encoder runs at a smaller resolution than the table.

    Args:
        config: the backbone architecture; a `Dinov2WithRegistersConfig` selects the register variant.
        image_size: square input resolution, a multiple of the patch size.
        num_frames: frames sampled per video; each is encoded on its own, so T' = T.
        pretrained: hub id or local directory to load weights from; None for random init.
        layer: hidden-state index returned (0 = embeddings, -1 = last block, before the final norm).
    """

    def __init__(
        self,
        config: Dinov2Config | Dinov2WithRegistersConfig,
        *,
        image_size: int,
        num_frames: int,
        pretrained: str | None = None,
        layer: int = -2,
    ) -> None:
        side = image_size // config.patch_size
        super().__init__(
            num_frames=num_frames,
            image_size=image_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            embed_dim=config.hidden_size,
            temporal_tokens=num_frames,
            grid=(side, side),
            layer=layer,
            pretrained=pretrained,
        )
        with_registers = isinstance(config, Dinov2WithRegistersConfig)
        self.prefix_tokens = 1 + (config.num_register_tokens if with_registers else 0)
        model_cls = Dinov2WithRegistersModel if with_registers else Dinov2Model
        self.model = load_hf_model(model_cls, config, pretrained)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        frames = pixels.flatten(0, 1)  # (B*T, 3, S, S)
        hidden = self.model(pixel_values=frames, output_hidden_states=[self.layer]).hidden_states[self.layer]
        return self.to_grid(hidden, prefix_tokens=self.prefix_tokens)  # (B, T, N, D)


def _config(hidden: int, layers: int, heads: int) -> Dinov2Config:
    # Patch 14 with the published 518 px position table (37x37 patches).
    return Dinov2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, patch_size=14, image_size=518
    )


@register_encoder("dinov2-b14-224")
def dinov2_b14_224(pretrained: str | None = None, num_frames: int = 16) -> Dinov2Encoder:
    """DINOv2 ViT-B/14 at 224 px, 16x16 patches of width 768 (weights: `facebook/dinov2-base`)."""
    return Dinov2Encoder(_config(768, 12, 12), image_size=224, num_frames=num_frames, pretrained=pretrained)


@register_encoder("dinov2-l14-224")
def dinov2_l14_224(pretrained: str | None = None, num_frames: int = 16) -> Dinov2Encoder:
    """DINOv2 ViT-L/14 at 224 px, 16x16 patches of width 1024 (weights: `facebook/dinov2-large`)."""
    return Dinov2Encoder(_config(1024, 24, 16), image_size=224, num_frames=num_frames, pretrained=pretrained)


@register_encoder("dinov2-reg4-l14-224")
def dinov2_reg4_l14_224(pretrained: str | None = None, num_frames: int = 16) -> Dinov2Encoder:
    """DINOv2 ViT-L/14 with 4 registers at 224 px, 16x16 patches of width 1024
    (weights: `facebook/dinov2-with-registers-large`)."""
    config = Dinov2WithRegistersConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=518,
        num_register_tokens=4,
    )
    return Dinov2Encoder(config, image_size=224, num_frames=num_frames, pretrained=pretrained)


@register_encoder("dinov2-tiny")
def dinov2_tiny(pretrained: str | None = None, num_frames: int = 4) -> Dinov2Encoder:
    """CPU-sized random DINOv2 for tests: 32 px, 4x4 patches of width 32, 2 layers, MLP width 64."""
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=8, image_size=32
    )
    return Dinov2Encoder(config, image_size=32, num_frames=num_frames, pretrained=pretrained)
