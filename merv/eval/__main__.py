"""`python -m merv.eval merge ...`: merge finished prediction chunks and write the report by hand (any task kind;
the same as `merv eval merge`).

Example:
    python -m merv.eval merge --output_dir eval_results/my-model --name nextqa_naive --num_chunks 4
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from merv.eval.commands import merge_run
from merv.eval.runner import MergeError, summary_line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m merv.eval", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="join chunk files by question id and write the report")
    merge.add_argument("--output_dir", required=True, help="folder holding <name>_pred_<n>_<k>.jsonl files")
    merge.add_argument(
        "--name", required=True, help="run name: <task>_<strategy> for MCQ (nextqa_naive), <task> otherwise"
    )
    merge.add_argument("--num_chunks", type=int, required=True, help="number of chunks the run was split into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = merge_run(args.output_dir, args.name, args.num_chunks)
    except MergeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary_line(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
