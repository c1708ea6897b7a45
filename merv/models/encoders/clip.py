"""CLIP vision towers (Hugging Face `CLIPVisionModel`), applied to each frame independently."""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from merv.models.encoders.base import CLIP_MEAN, CLIP_STD, VisionEncoder, load_hf_model, register_encoder


class ClipEncoder(VisionEncoder):
    """CLIP image encoder; the CLS token is dropped, leaving the patch grid.

    Args:
        config: the vision tower architecture.
        num_frames: frames sampled per video; each is encoded on its own, so T' = T.
        pretrained: hub id or local directory to load weights from; None for random init.
        layer: hidden-state index returned (0 = embeddings after the pre-norm, -1 = last block).
    """

    def __init__(
        self, config: CLIPVisionConfig, *, num_frames: int, pretrained: str | None = None, layer: int = -2
    ) -> None:
        side = config.image_size // config.patch_size
        super().__init__(
            num_frames=num_frames,
            image_size=config.image_size,
            mean=CLIP_MEAN,
            std=CLIP_STD,
            embed_dim=config.hidden_size,
            temporal_tokens=num_frames,
            grid=(side, side),
            layer=layer,
            pretrained=pretrained,
        )
        self.model = load_hf_model(CLIPVisionModel, config, pretrained)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        frames = pixels.flatten(0, 1)  # (B*T, 3, S, S)
        hidden = self.model(pixel_values=frames, output_hidden_states=[self.layer]).hidden_states[self.layer]
        return self.to_grid(hidden, prefix_tokens=1)  # (B, T, N, D)


def _config(hidden: int, intermediate: int, layers: int, heads: int, patch: int, image: int) -> CLIPVisionConfig:
    # OpenAI CLIP uses quick-GELU and LayerNorm eps 1e-5 (the config defaults); projection_dim only sizes the
    # unused projection but is kept equal to the published ViT-L/14 config.
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=patch,
        image_size=image,
        projection_dim=768,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


@register_encoder("clip-l14-224")
def clip_l14_224(pretrained: str | None = None, num_frames: int = 16) -> ClipEncoder:
    """CLIP ViT-L/14 at 224 px, 16x16 patches of width 1024 (weights: `openai/clip-vit-large-patch14`)."""
    return ClipEncoder(_config(1024, 4096, 24, 16, 14, 224), num_frames=num_frames, pretrained=pretrained)


@register_encoder("clip-l14-336")
def clip_l14_336(pretrained: str | None = None, num_frames: int = 16) -> ClipEncoder:
    """CLIP ViT-L/14 at 336 px, 24x24 patches of width 1024 (weights: `openai/clip-vit-large-patch14-336`)."""
    return ClipEncoder(_config(1024, 4096, 24, 16, 14, 336), num_frames=num_frames, pretrained=pretrained)


@register_encoder("clip-tiny")
def clip_tiny(pretrained: str | None = None, num_frames: int = 4) -> ClipEncoder:
    """CPU-sized random CLIP for tests: 32 px, 4x4 patches of width 32, 2 layers."""
    return ClipEncoder(_config(32, 64, 2, 2, 8, 32), num_frames=num_frames, pretrained=pretrained)
