"""Sharding: whether a strategy shards the model across ranks, and FSDP's policy for which modules become their
own flat parameter units."""

from __future__ import annotations

from typing import Any

from timm.models.vision_transformer import Block as TimmBlock
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from merv.models.encoders.base import VisionEncoder
from merv.models.fusion import Fusion
from merv.models.projector import Projector

# Every Hugging Face decoder/encoder layer derives from GradientCheckpointingLayer; timm ViTs repeat Block.
# Whole encoders are units too, so their embeddings and norms never land in the root unit beside the
# LLM's embeddings, which may be stored in another dtype (FSDP flattens one dtype per unit).
UNIT_TYPES: tuple[type[nn.Module], ...] = (GradientCheckpointingLayer, TimmBlock, VisionEncoder, Projector, Fusion)


def is_sharded(strategy: Any) -> bool:
    """Whether `strategy` shards the weights and gradients across ranks, so that no rank holds all of them.

    FSDP shards unless its `sharding_strategy` is `NO_SHARD`; DeepSpeed only at ZeRO stage 3 (stages 1 and 2
    keep every weight on every rank); model parallelism always. Strategies are matched by class name (their
    own or a base class's), so DeepSpeed need not be installed to ask.
    """
    names = {cls.__name__ for cls in type(strategy).__mro__}
    if "FSDPStrategy" in names:
        return getattr(getattr(strategy, "sharding_strategy", None), "name", "FULL_SHARD") != "NO_SHARD"
    if "DeepSpeedStrategy" in names:
        return bool(getattr(strategy, "zero_stage_3", True))
    return "ModelParallelStrategy" in names


def merv_fsdp_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP `auto_wrap_policy`: wrap each LLM decoder layer, each encoder and its blocks, each projector and
    the fusion.

    Frozen encoders and trainable projectors never share a unit, and the root unit keeps only the LLM's
    embeddings, final norm and head, so no unit mixes the encoders' dtype with the LLM's; a layer's
    parameters are gathered only while that layer runs.
    """
    return True if recurse else isinstance(module, UNIT_TYPES)
