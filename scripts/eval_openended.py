#!/usr/bin/env python
"""Evaluate a saved VideoLM on an open-ended video QA benchmark (MSVD, MSRVTT, TGIF, ActivityNet-QA).

Example:
    python scripts/eval_openended.py --model_path runs/my-model --eval_dataset msvd \
        --filename_question data/msvd/test_q.json --filename_answer data/msvd/test_a.json \
        --video_root data/msvd/videos --num_chunks 2 --chunk_idx 0 \
        --judge openai --judge_model gpt-4o-mini --base_url https://api.openai.com/v1

Predictions follow the `{id, question, answer, pred}` convention, so `scripts/eval_gpt.py` can judge them
later. Without `--judge`, the report holds the string-match metric (exact match, token F1) only.
"""

from merv.eval.merv_flags import chunk_summary, openended_main, run_script

if __name__ == "__main__":
    raise SystemExit(run_script(openended_main, chunk_summary))
