"""Turn a training checkpoint into a `save_pretrained` directory that loads without Lightning: `merv export`.

    python scripts/export.py --model outputs/run/version_0 --output models/merv-tiny [--merge_lora]

The options are `merv export`'s (`--help` lists them; FSDP checkpoints are consolidated first, see
`merv.cli.export`). The earlier spellings `--checkpoint` (for `--model`) and `--merge-lora` (for
`--merge_lora`) still work; `--model` and `--merge_lora` are canonical.
"""

from __future__ import annotations

import sys

from merv.cli import rename_flags
from merv.cli.export import main as export_main

FORMER_FLAGS = {"--checkpoint": "--model", "--merge-lora": "--merge_lora"}


def main(argv: list[str] | None = None) -> int:
    return export_main(rename_flags(sys.argv[1:] if argv is None else argv, FORMER_FLAGS))


if __name__ == "__main__":
    raise SystemExit(main())
