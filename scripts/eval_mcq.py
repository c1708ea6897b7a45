#!/usr/bin/env python
"""Evaluate a saved VideoLM on a multiple-choice video benchmark (MERV-compatible flags).

Example:
    python scripts/eval_mcq.py --model_path runs/my-model --eval_dataset nextqa \
        --filename_question data/nextqa/val.csv --video_root data/nextqa/videos \
        --strategy naive --num_chunks 4 --chunk_idx 0

Each chunk writes its own predictions file and resumes after a kill; the chunk that finishes last merges
all chunks and writes `<output_dir>/<task>_<strategy>_report.json`. `--merge_only` merges by hand.
"""

from merv.eval.merv_flags import chunk_summary, mcq_main, run_script

if __name__ == "__main__":
    raise SystemExit(run_script(mcq_main, chunk_summary))
