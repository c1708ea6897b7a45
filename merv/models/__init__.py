"""Plain PyTorch model code: encoders, projectors, fusion, prompting and `VideoLM` (no Lightning).

Names are imported on first use, so light modules of this package (`merv.models.prompting`,
`merv.models.sources`) can be imported, e.g. by annotation readers, without loading torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from merv.models.encoders import VisionEncoder, build_encoder, list_encoders, register_encoder
    from merv.models.llm import LLMConfig, build_tiny_tokenizer
    from merv.models.processor import VideoLMProcessor
    from merv.models.prompting import PromptBuilder, PromptFormat
    from merv.models.vidlm import EncoderConfig, LoraSettings, VideoLM, VideoLMConfig, VideoLMOutput

_EXPORTS = {
    "EncoderConfig": "merv.models.vidlm",
    "LLMConfig": "merv.models.llm",
    "LoraSettings": "merv.models.vidlm",
    "PromptBuilder": "merv.models.prompting",
    "PromptFormat": "merv.models.prompting",
    "VideoLM": "merv.models.vidlm",
    "VideoLMConfig": "merv.models.vidlm",
    "VideoLMOutput": "merv.models.vidlm",
    "VideoLMProcessor": "merv.models.processor",
    "VisionEncoder": "merv.models.encoders",
    "build_encoder": "merv.models.encoders",
    "build_tiny_tokenizer": "merv.models.llm",
    "list_encoders": "merv.models.encoders",
    "register_encoder": "merv.models.encoders",
}
__all__ = [
    "EncoderConfig",
    "LLMConfig",
    "LoraSettings",
    "PromptBuilder",
    "PromptFormat",
    "VideoLM",
    "VideoLMConfig",
    "VideoLMOutput",
    "VideoLMProcessor",
    "VisionEncoder",
    "build_encoder",
    "build_tiny_tokenizer",
    "list_encoders",
    "register_encoder",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'merv.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
