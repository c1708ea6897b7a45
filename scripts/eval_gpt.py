#!/usr/bin/env python
"""Judge open-ended predictions (Video-ChatGPT protocol: yes/no + 0-5 score) and write a report.

Example:
    OPENAI_API_KEY=... python scripts/eval_gpt.py --pred_path eval_results/m/msvd_pred_merge.jsonl \
        --output_file eval_results/m/msvd_gpt.json --judge openai --model gpt-4o-mini --concurrency 8

`--judge local --model DIR` uses a local Hugging Face causal LM; `--judge match` computes exact match and
token F1 only. Verdicts are cached (`--cache_dir`), so a rerun only pays for items not judged before.
"""

from merv.eval.merv_flags import gpt_main, run_script

if __name__ == "__main__":
    raise SystemExit(run_script(gpt_main))
