#!/usr/bin/env python
"""Evaluate a saved VideoLM on action recognition / fall detection and write a JSON report and a PNG.

Example (OmniFall cross-subject test split of Le2i, zero-shot):
    python scripts/eval_action.py --model_path runs/merv-fall/model --labels omnifall/labels/le2i.csv \
        --split_file omnifall/splits/cs/le2i/test.csv --video_root omnifall/le2i/video --mode zero-shot

Modes: zero-shot, few-shot (--k 4 --exemplars random|similar; exemplars from train.csv beside the split
file), cot (reason, then answer), loglik (score every label). Outputs go to --output_dir as
`<run>_predictions.jsonl`, `<run>_report.json` and `<run>_confusion.png`.
"""

import logging

from merv.eval.action import eval_main, summary_line


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = eval_main()
    print(summary_line(report))
    print(f"report: {report['files']['report']}  confusion matrix: {report['files']['confusion_matrix_png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
