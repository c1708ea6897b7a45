"""Turn a training checkpoint into a `save_pretrained` directory that loads without Lightning.

    python scripts/export.py --checkpoint outputs/run/version_0 --output models/merv-tiny [--merge-lora]

`--checkpoint` takes a Lightning `.ckpt` or a run directory (its newest `last*.ckpt`). FSDP runs with
`state_dict_type: sharded` write checkpoint folders; consolidate one first, which writes `<folder>.consolidated`
beside it, and pass that file:

    python -m lightning.pytorch.utilities.consolidate_checkpoint outputs/run/version_0/checkpoints/last.ckpt
    python scripts/export.py --checkpoint outputs/run/version_0/checkpoints/last.ckpt.consolidated \
        --output models/merv
"""

from __future__ import annotations

import argparse
import logging

from merv.lit.checkpoints import load_checkpoint_model


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description="Export a merv training checkpoint with save_pretrained.")
    p.add_argument(
        "--checkpoint", required=True, help="a .ckpt file, a consolidated FSDP checkpoint or a run directory"
    )
    p.add_argument("--output", required=True, help="directory to write (config.json, model.safetensors, llm/)")
    p.add_argument("--merge-lora", action="store_true", help="fold LoRA adapters into the LLM weights")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = load_checkpoint_model(args.checkpoint)
    model.save_pretrained(args.output, merge_lora=args.merge_lora)
    print(f"exported {args.checkpoint} to {args.output}")
    return args.output


if __name__ == "__main__":
    main()
