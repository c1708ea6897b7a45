"""Plain PyTorch model code: encoders, projectors, fusion, prompting and `VideoLM` (no Lightning)."""

from merv.models.encoders import VisionEncoder, build_encoder, list_encoders, register_encoder
from merv.models.llm import LLMConfig, build_tiny_tokenizer
from merv.models.processor import VideoLMProcessor
from merv.models.prompting import PromptBuilder, PromptFormat
from merv.models.vidlm import EncoderConfig, LoraSettings, VideoLM, VideoLMConfig, VideoLMOutput

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
