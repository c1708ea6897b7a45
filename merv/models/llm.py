"""The language model side: building or loading an `AutoModelForCausalLM` and its tokenizer.

A tiny tokenizer is trained locally (byte-level BPE on a small built-in corpus) so tests and the CPU
quick start need no download; real models load from a hub id or a local directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

TINY_LLM_ARCH: dict = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}

# Enough English and video vocabulary that common words become single tokens; anything else still
# encodes through the byte-level alphabet.
_TINY_CORPUS = """
What is happening in the video? Describe the video. Which way does it move? What colour is the shape?
What shape is it? What is the person doing? Answer with the option's letter from the given choices directly.
The best answer is A. B. C. D. E. yes no the a an of in on to and is are moves moving left right up down
red green blue yellow white black orange purple circle square triangle shape object person figure man woman
walk walks walking fall falls falling fallen sit sits sitting sit_down stand stands standing stand_up lie lies
lying lie_down kneel kneeling squat squatting crawl jump other one two three four five camera room floor
question answer option options video frame frames first then after before because while slowly quickly
""".split()


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer in memory (deterministic, no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeating the corpus line by line gives BPE word frequencies without any randomness.
    tok.train_from_iterator([" ".join(_TINY_CORPUS)] * 4 + _TINY_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@dataclass
class LLMConfig:
    """Which causal language model to use and how to build it."""

    name_or_path: str | None = None
    """Hub id or local directory of a pretrained causal LM; None builds `arch` with random weights."""
    arch: dict = field(default_factory=lambda: dict(TINY_LLM_ARCH))
    """Architecture for random initialisation (`model_type` + config kwargs); ignored when loading."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; None = `name_or_path`, or the local tiny tokenizer when building."""
    attn_implementation: str = "sdpa"
    """Attention kernel: `sdpa` (default, any device), `eager`, or `flash_attention_2` (needs flash-attn)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype the LLM is created or loaded in."""
    prompt_format: Literal["auto", "chat_template", "merv", "llama2", "vicuna"] = "auto"
    """How conversations become text: `auto` uses the tokenizer's chat template when it has one, else `merv`."""
    trust_remote_code: bool = False
    """Allow model code from the hub; off unless you ask for it."""


def load_tokenizer(cfg: LLMConfig, source: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer from `source` (default: `cfg.tokenizer`, else `cfg.name_or_path`), or the tiny one."""
    source = source or cfg.tokenizer or cfg.name_or_path
    if source is None:
        return build_tiny_tokenizer()
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        # Padding positions are masked everywhere, so reusing EOS (or UNK) as pad is harmless.
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def _check_attn_implementation(cfg: LLMConfig) -> None:
    if cfg.attn_implementation == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError as e:
            raise ImportError("attn_implementation='flash_attention_2' needs `pip install merv[flash]`") from e


def load_llm(source: str | os.PathLike, cfg: LLMConfig, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load a pretrained LLM from a hub id or directory with `cfg`'s attention kernel and remote-code setting.

    Args:
        source: hub id or local directory.
        cfg: supplies `attn_implementation`, `trust_remote_code` and the default dtype.
        dtype: overrides `cfg.dtype`.
    """
    _check_attn_implementation(cfg)
    return AutoModelForCausalLM.from_pretrained(
        source,
        dtype=dtype or getattr(torch, cfg.dtype),
        attn_implementation=cfg.attn_implementation,
        trust_remote_code=cfg.trust_remote_code,
    )


def build_llm(cfg: LLMConfig, tokenizer) -> PreTrainedModel:
    """Load the pretrained LLM, or build `cfg.arch` with random weights sized to the tokenizer."""
    if cfg.name_or_path is not None:
        return load_llm(cfg.name_or_path, cfg)
    _check_attn_implementation(cfg)
    dtype = getattr(torch, cfg.dtype)
    arch = dict(cfg.arch)
    model_type = arch.pop("model_type")
    arch.setdefault("vocab_size", len(tokenizer))
    config = AutoConfig.for_model(
        model_type,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **arch,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation=cfg.attn_implementation)
    return model.to(dtype)
