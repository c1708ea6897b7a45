"""Sharding policy for FSDP: which modules become their own flat parameter units."""

from __future__ import annotations

from timm.models.vision_transformer import Block as TimmBlock
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from merv.models.fusion import Fusion
from merv.models.projector import Projector

# Every Hugging Face decoder/encoder layer derives from GradientCheckpointingLayer; timm ViTs repeat Block.
UNIT_TYPES: tuple[type[nn.Module], ...] = (GradientCheckpointingLayer, TimmBlock, Projector, Fusion)


def merv_fsdp_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP `auto_wrap_policy`: wrap each LLM decoder layer, each encoder block, each projector and the fusion.

    Frozen encoder blocks and trainable projectors never share a unit, so every unit has one dtype and
    one `requires_grad`, and a layer's parameters are gathered only while that layer runs.
    """
    return True if recurse else isinstance(module, UNIT_TYPES)
