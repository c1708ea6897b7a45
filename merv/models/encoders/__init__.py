"""Frozen visual encoders, one module per family, built by registered id."""

# Importing the family modules registers their ids.
from merv.models.encoders import clip, dinov2, siglip, timm_vit, videomae, vivit  # noqa: F401
from merv.models.encoders.base import VisionEncoder, build_encoder, list_encoders, register_encoder

__all__ = ["VisionEncoder", "build_encoder", "list_encoders", "register_encoder"]
