"""SigLIP vision towers (Hugging Face `SiglipVisionModel`), applied to each frame independently."""

from __future__ import annotations

import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from merv.models.encoders.base import HALF_MEAN, HALF_STD, VisionEncoder, load_hf_model, register_encoder


class SiglipEncoder(VisionEncoder):
    """SigLIP image encoder; it has no CLS token, so every token is a patch.

    Args:
        config: the vision tower architecture.
        num_frames: frames sampled per video; each is encoded on its own, so T' = T.
        pretrained: hub id or local directory to load weights from; None for random init.
        layer: hidden-state index returned (0 = patch embeddings, -1 = last block).
    """

    def __init__(
        self, config: SiglipVisionConfig, *, num_frames: int, pretrained: str | None = None, layer: int = -2
    ) -> None:
        side = config.image_size // config.patch_size
        super().__init__(
            num_frames=num_frames,
            image_size=config.image_size,
            mean=HALF_MEAN,
            std=HALF_STD,
            embed_dim=config.hidden_size,
            temporal_tokens=num_frames,
            grid=(side, side),
            layer=layer,
            pretrained=pretrained,
        )
        # Features come from a hidden layer, so the attention-pooling head is never built, even when
        # the checkpoint has one.
        self.model = load_hf_model(SiglipVisionModel, config, pretrained, overrides=("vision_use_head",))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        frames = pixels.flatten(0, 1)  # (B*T, 3, S, S)
        hidden = self.model(pixel_values=frames, output_hidden_states=[self.layer]).hidden_states[self.layer]
        return self.to_grid(hidden)  # (B, T, N, D)


def _config(hidden: int, intermediate: int, layers: int, heads: int, patch: int, image: int) -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=patch,
        image_size=image,
        vision_use_head=False,
    )


@register_encoder("siglip-b16-224")
def siglip_b16_224(pretrained: str | None = None, num_frames: int = 16) -> SiglipEncoder:
    """SigLIP ViT-B/16 at 224 px, 14x14 patches of width 768 (weights: `google/siglip-base-patch16-224`)."""
    return SiglipEncoder(_config(768, 3072, 12, 12, 16, 224), num_frames=num_frames, pretrained=pretrained)


@register_encoder("siglip-so400m-384")
def siglip_so400m_384(pretrained: str | None = None, num_frames: int = 16) -> SiglipEncoder:
    """SigLIP So400m/14 at 384 px, 27x27 patches of width 1152 (weights: `google/siglip-so400m-patch14-384`)."""
    return SiglipEncoder(_config(1152, 4304, 27, 16, 14, 384), num_frames=num_frames, pretrained=pretrained)


@register_encoder("siglip-tiny")
def siglip_tiny(pretrained: str | None = None, num_frames: int = 4) -> SiglipEncoder:
    """CPU-sized random SigLIP for tests: 32 px, 4x4 patches of width 32, 2 layers."""
    return SiglipEncoder(_config(32, 64, 2, 2, 8, 32), num_frames=num_frames, pretrained=pretrained)
