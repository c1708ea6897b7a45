#!/usr/bin/env python
"""Evaluate a saved VideoLM on a multiple-choice video benchmark (MERV-compatible flags).

Example:
    python scripts/eval_mcq.py --model_path runs/my-model --eval_dataset nextqa \
        --filename_question data/nextqa/val.csv --video_root data/nextqa/videos \
        --strategy naive --num_chunks 4 --chunk_idx 0

Each chunk writes its own predictions file and resumes after a kill; the chunk that finishes last merges
all chunks and writes `<output_dir>/<task>_<strategy>_report.json`. `--merge_only` merges by hand.
"""

import logging

from merv.eval.cli import mcq_main


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = mcq_main()
    print(summary if summary is not None else "chunk finished; the report is written once every chunk has finished")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
