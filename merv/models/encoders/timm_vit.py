"""timm Vision Transformers (SigLIP, DINOv2, AugReg ViT, ...), applied to each frame independently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from merv.models.encoders.base import VisionEncoder, register_encoder, resolve_pretrained


class TimmViTEncoder(VisionEncoder):
    """A timm `VisionTransformer`; prefix tokens (CLS, registers, distillation) are dropped.

    Normalisation comes from the timm pretrained config of `model_name`, so naming the weight tag
    (`vit_base_patch16_224.augreg_in21k`) also selects the matching mean and std.

    Args:
        model_name: timm model name, optionally with a weight tag.
        num_frames: frames sampled per video; each is encoded on its own, so T' = T.
        pretrained: None for random init; a local directory holding `model.safetensors` or
            `pytorch_model.bin` (timm state dict); or a Hugging Face hub id of timm weights
            (e.g. `timm/vit_so400m_patch14_siglip_384.webli`).
        layer: hidden-state index returned, counted like Hugging Face hidden states so ids agree across
            libraries: -1 = last block, -2 = penultimate, k > 0 = output of block k - 1. The embeddings
            (0) are not available.
        **overrides: architecture arguments for `timm.create_model` (`img_size`, `depth`, ...).

    Raises:
        ValueError: `layer` does not name a block output.
        FileNotFoundError: `pretrained` names a local directory that does not exist.
    """

    def __init__(
        self, model_name: str, *, num_frames: int, pretrained: str | None = None, layer: int = -2, **overrides: Any
    ) -> None:
        kwargs: dict[str, Any] = {}
        if pretrained is not None:
            source = resolve_pretrained(pretrained)
            overlay = (
                {"source": "local-dir", "file": source}
                if Path(source).is_dir()
                else {"source": "hf-hub", "hf_hub_id": source}
            )
            kwargs = {"pretrained": True, "pretrained_cfg_overlay": overlay}
        # num_classes=0 drops the classifier; loading then skips any head weights in the checkpoint.
        model = timm.create_model(model_name, num_classes=0, **kwargs, **overrides)
        cfg = model.pretrained_cfg
        super().__init__(
            num_frames=num_frames,
            image_size=model.patch_embed.img_size[0],
            mean=cfg["mean"],
            std=cfg["std"],
            embed_dim=model.embed_dim,
            temporal_tokens=num_frames,
            grid=model.patch_embed.grid_size,
            layer=layer,
            pretrained=pretrained,
        )
        self.model_name = model_name
        self.model = model
        self.block_index()  # reject a bad layer now rather than at the first forward

    def block_index(self) -> int:
        """The timm block whose output is hidden state `layer`."""
        depth = len(self.model.blocks)
        if not (-depth <= self.layer <= depth) or self.layer == 0:
            raise ValueError(
                f"layer {self.layer} is not a block output of {self.model_name} ({depth} blocks): "
                f"use -1..-{depth} or 1..{depth}"
            )
        return self.layer - 1 if self.layer > 0 else depth + self.layer

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        frames = pixels.flatten(0, 1)  # (B*T, 3, S, S)
        # Unnormed block output with prefix tokens already split off; blocks after it are skipped.
        (tokens,) = self.model.forward_intermediates(
            frames, indices=[self.block_index()], stop_early=True, output_fmt="NLC", intermediates_only=True
        )  # (B*T, N, D)
        return self.to_grid(tokens)  # (B, T, N, D)


@register_encoder("timm-siglip-b16-224")
def timm_siglip_b16_224(pretrained: str | None = None, num_frames: int = 16) -> TimmViTEncoder:
    """SigLIP ViT-B/16 at 224 px, 14x14 patches of width 768, as MERV runs it
    (weights: `timm/vit_base_patch16_siglip_224.webli`)."""
    return TimmViTEncoder("vit_base_patch16_siglip_224.webli", num_frames=num_frames, pretrained=pretrained)


@register_encoder("timm-siglip-so400m-384")
def timm_siglip_so400m_384(pretrained: str | None = None, num_frames: int = 16) -> TimmViTEncoder:
    """SigLIP So400m/14 at 384 px, 27x27 patches of width 1152
    (weights: `timm/vit_so400m_patch14_siglip_384.webli`)."""
    return TimmViTEncoder("vit_so400m_patch14_siglip_384.webli", num_frames=num_frames, pretrained=pretrained)


@register_encoder("timm-dinov2-reg4-l14-224")
def timm_dinov2_reg4_l14_224(pretrained: str | None = None, num_frames: int = 16) -> TimmViTEncoder:
    """DINOv2 ViT-L/14 with 4 registers at 224 px, 16x16 patches of width 1024, as MERV runs it; timm
    resamples the 518 px position table when loading (weights: `timm/vit_large_patch14_reg4_dinov2.lvd142m`)."""
    return TimmViTEncoder(
        "vit_large_patch14_reg4_dinov2.lvd142m", num_frames=num_frames, pretrained=pretrained, img_size=224
    )


@register_encoder("timm-vit-b16-224")
def timm_vit_b16_224(pretrained: str | None = None, num_frames: int = 16) -> TimmViTEncoder:
    """AugReg ViT-B/16 (ImageNet-21k) at 224 px, 14x14 patches of width 768
    (weights: `timm/vit_base_patch16_224.augreg_in21k`)."""
    return TimmViTEncoder("vit_base_patch16_224.augreg_in21k", num_frames=num_frames, pretrained=pretrained)


@register_encoder("timm-vit-tiny")
def timm_vit_tiny(pretrained: str | None = None, num_frames: int = 4) -> TimmViTEncoder:
    """CPU-sized random timm ViT with a CLS token for tests: 32 px, 4x4 patches of width 32, 2 blocks."""
    return TimmViTEncoder(
        "vit_tiny_patch16_224",
        num_frames=num_frames,
        pretrained=pretrained,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
    )
