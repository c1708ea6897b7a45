"""MERV's quick start: load a model, build a prompt, ask about a video (`merv chat`).

    python scripts/quick_start.py                                  # the demo's trained model and sample video
    python scripts/quick_start.py --model outputs/quickstart/run/version_0/model --video my.mp4 --question "..."

`--model` takes anything `load_vid` does: a saved model dir, a `.ckpt`, a run dir, or a registered name.
The options are `merv chat`'s (`--help` lists them); `--max-new-tokens` still works for `--max_new_tokens`,
which is canonical. The steps themselves are in `merv.cli.chat.chat`.
"""

from __future__ import annotations

import sys

from merv.cli import rename_flags
from merv.cli.chat import chat, parse_args

FORMER_FLAGS = {"--max-new-tokens": "--max_new_tokens"}


def main(argv: list[str] | None = None) -> str:
    generated_text = chat(parse_args(rename_flags(sys.argv[1:] if argv is None else argv, FORMER_FLAGS)))
    print(generated_text)
    return generated_text


if __name__ == "__main__":
    main()
