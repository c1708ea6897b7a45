#!/usr/bin/env python
"""Evaluate a saved VideoLM on action recognition / fall detection and write a JSON report and a PNG.

Example (OmniFall cross-subject test split of Le2i, zero-shot):
    python scripts/eval_action.py --model_path runs/merv-fall/model --labels omnifall/labels/le2i.csv \
        --split_file omnifall/splits/cs/le2i/test.csv --video_root omnifall/le2i/video --mode zero-shot

Modes: zero-shot, few-shot (--k 4 --exemplars random|similar; exemplars from train.csv beside the split
file), cot (reason, then answer), loglik (score every label). `--num_chunks n --chunk_idx k` splits the clips over
processes; a killed run resumes. Outputs go to --output_dir as `<run>_pred_<n>_<k>.jsonl` per chunk, then
`<run>_pred_merge.jsonl`, `<run>_report.json` and `<run>_confusion.png`.
"""

from merv.eval.action import eval_main, summary_line
from merv.eval.merv_flags import run_script


def render(report: dict | None) -> str:
    if report is None:
        return "chunk finished; the report is written once every chunk has finished"
    files = report["files"]
    return f"{summary_line(report)}\nreport: {files['report']}  confusion matrix: {files['confusion_matrix_png']}"


if __name__ == "__main__":
    raise SystemExit(run_script(eval_main, render))
