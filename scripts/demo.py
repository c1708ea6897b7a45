"""CPU quick start: generate videos, train the tiny VideoLM through the CLI, report held-out MCQ accuracy.

    python scripts/demo.py            # what `make demo` runs

Steps: (1) write the synthetic shapes/actions videos and annotations if they are not there yet,
(2) `python -m merv.cli fit --config configs/experiments/quickstart.yaml` (in-process), which also
exports the trained model with `save_pretrained`, (3) score the held-out NExT-QA-style multiple-choice
file by option log-likelihood and print the accuracy next to chance.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data/synthetic", help="where the generated videos live")
    p.add_argument("--num-videos", type=int, default=1000, help="videos per synthetic family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="outputs/quickstart", help="run directory (logs, checkpoints, model)")
    p.add_argument("--max-steps", type=int, default=None, help="override the config's trainer.max_steps")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from merv.cli import main as cli_main
    from merv.data.synthetic import generate
    from merv.eval import EvalConfig, evaluate
    from merv.models import VideoLM

    started = time.perf_counter()
    data = Path(args.data_dir)
    if not (data / "captions.json").is_file():
        generate(data, num_videos=args.num_videos, seed=args.seed)

    cli = cli_main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/experiments/quickstart.yaml"),
            "--seed_everything",
            str(args.seed),
            "--trainer.default_root_dir",
            args.output_dir,
            "--trainer.logger.init_args.save_dir",
            args.output_dir,
            "--data.train_files",
            json.dumps([str(data / "captions.json"), str(data / "instruct.json")]),
            "--data.val_files",
            json.dumps([str(data / "val.json")]),
            *(["--trainer.max_steps", str(args.max_steps)] if args.max_steps else []),
        ]
    )
    trained = time.perf_counter()
    model_dir = Path(cli.trainer.log_dir) / "model"

    model = VideoLM.from_pretrained(model_dir)
    outcome = evaluate(
        model,
        EvalConfig(
            task="nextqa",
            question_file=data / "nextqa.csv",
            video_root=data / "videos",
            output_dir=Path(cli.trainer.log_dir) / "eval",
            model_path=str(model_dir),
            strategy="loglik",
        ),
    )
    report = outcome.report
    chance = 1 / 5
    result = {
        "accuracy": report["accuracy"],
        "chance": chance,
        "per_type": {k: v["accuracy"] for k, v in report["per_type"].items()},
        "train_minutes": round((trained - started) / 60, 2),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
        "model_dir": str(model_dir),
        "report": str(report["report_file"]),
    }
    print(f"\nheld-out MCQ accuracy {result['accuracy']:.3f} (chance {chance:.3f}); per type {result['per_type']}")
    print(f"wall time {result['total_minutes']} min (training {result['train_minutes']} min); model in {model_dir}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
