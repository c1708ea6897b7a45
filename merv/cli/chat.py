"""`merv chat --model M --video V --question Q`: ask a model about a video, MERV's quick start as a command.

merv chat                                                   # the demo's model and the sample video
merv chat --model outputs/tour/run/version_0/model --video my.mp4 --question "What falls?" --temperature 0.4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from merv.cli import COMMANDS, config_parser, parse_config
from merv.models.loading import load_vid

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ChatConfig:
    """Which model, which video, what to ask, how to generate.

    Attributes:
        model: a saved model directory, a Lightning `.ckpt`, a run directory or a registered name
            (`merv.available_models()`); the default is where `make demo` exports its model.
        video: the video file to ask about.
        question: the question, sent as one human turn through the model's prompt builder.
        max_new_tokens: the most tokens to generate.
        temperature: sampling temperature; 0 decodes greedily.
        top_p: nucleus sampling mass when sampling (temperature > 0); unset keeps the LLM's default.
        start: where the clip starts, in seconds; unset = the beginning of the video.
        end: where the clip ends, in seconds; unset = the end of the video.
        device: where to run, e.g. `cpu`, `cuda:1`; unset = `cuda` when available, else `cpu`.
        dtype: the model's dtype; `auto` = bfloat16 on CUDA, float32 elsewhere.
    """

    model: str = "outputs/quickstart/run/version_0/model"
    video: str = "assets/sample.mp4"
    question: str = "Describe the video."
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float | None = None
    start: float | None = None
    end: float | None = None
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be at least 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be within (0, 1], got {self.top_p}")


def chat(cfg: ChatConfig) -> str:
    """Load the model, ask `cfg.question` about `cfg.video` as MERV's quick start does, return the answer."""
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[cfg.dtype] if cfg.dtype != "auto" else torch.bfloat16 if device.type == "cuda" else torch.float32
    vidlm = load_vid(cfg.model)
    vidlm.to(device, dtype=dtype)

    prompt_builder = vidlm.get_prompt_builder()
    prompt_builder.add_turn(role="human", message=cfg.question)
    prompt_text = prompt_builder.get_prompt()

    sampling = cfg.temperature > 0
    # None (not absent) overrides a sampling temperature in the LLM's own generation config when greedy.
    options = {"do_sample": sampling, "temperature": cfg.temperature if sampling else None}
    if sampling and cfg.top_p is not None:
        options["top_p"] = cfg.top_p
    return vidlm.generate(
        cfg.video,
        prompt_text,
        num_frames=[enc.num_frames for enc in vidlm.encoders],
        start=cfg.start,
        end=cfg.end,
        max_new_tokens=cfg.max_new_tokens,
        **options,
    )


def parse_args(argv: Sequence[str] | None = None) -> ChatConfig:
    """The `ChatConfig` of a `merv chat` command line (the arguments after `chat`)."""
    parser = config_parser(ChatConfig, "merv chat", COMMANDS["chat"].summary)
    return parse_config(parser, ChatConfig, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`merv chat`: print the answer."""
    print(chat(parse_args(argv)))
    return 0
