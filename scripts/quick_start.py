"""MERV's quick start: load a model, build a prompt, ask about a video.

    python scripts/quick_start.py                                  # the demo's trained model and sample video
    python scripts/quick_start.py --model outputs/quickstart/run/version_0/model --video my.mp4 --question "..."

`--model` takes anything `load_vid` does: a saved model dir, a `.ckpt`, a run dir, or a registered name.
"""

from __future__ import annotations

import argparse

import torch

from merv import load_vid

DEFAULT_MODEL = "outputs/quickstart/run/version_0/model"
DEFAULT_VIDEO = "assets/sample.mp4"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--video", default=DEFAULT_VIDEO)
    p.add_argument("--question", default="Describe the video.")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    args = p.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    vidlm = load_vid(args.model)
    vidlm.to(device, dtype=dtype)

    prompt_builder = vidlm.get_prompt_builder()
    prompt_builder.add_turn(role="human", message=args.question)
    prompt_text = prompt_builder.get_prompt()

    generated_text = vidlm.generate(
        args.video,
        prompt_text,
        num_frames=[enc.num_frames for enc in vidlm.encoders],
        do_sample=args.temperature > 0,
        temperature=args.temperature if args.temperature > 0 else None,
        max_new_tokens=args.max_new_tokens,
    )
    print(generated_text)
    return generated_text


if __name__ == "__main__":
    main()
