"""CPU quick start: generate videos, train the tiny VideoLM through the CLI, report held-out MCQ accuracy.

    python scripts/demo.py            # what `make demo` runs

Steps: (1) write the synthetic shapes/actions videos and annotations if they are not there yet,
(2) `merv fit --config configs/experiments/quickstart.yaml` (in-process), which also
exports the trained model with `save_pretrained` to `<output-dir>/run/version_0/model`, (3) score the
held-out NExT-QA-style multiple-choice file by option log-likelihood and print the accuracy next to chance.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("demo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default="data/synthetic", help="where the generated videos live")
    p.add_argument("--num_videos", type=int, default=1000, help="videos per synthetic family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default="outputs/quickstart", help="run directory (logs, checkpoints, model)")
    p.add_argument("--max_steps", type=int, default=None, help="override the config's trainer.max_steps")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from merv.cli.train import main as fit
    from merv.data.synthetic import generate
    from merv.eval import EvalConfig, evaluate
    from merv.models import VideoLM

    started = time.perf_counter()
    data = Path(args.data_dir)
    if not (data / "captions.json").is_file():
        generate(data, num_videos=args.num_videos, seed=args.seed)

    run_dir = Path(args.output_dir) / "run" / "version_0"
    if run_dir.exists():
        # The demo always trains from scratch into the same place, so quick_start.py finds its model.
        logger.info("replacing the previous demo run in %s", run_dir)
        shutil.rmtree(run_dir)
    overrides = {
        "--seed_everything": str(args.seed),
        "--trainer.default_root_dir": args.output_dir,
        "--trainer.logger.init_args.version": "0",
        "--data.train_files": json.dumps([str(data / "captions.json"), str(data / "instruct.json")]),
        "--data.val_files": json.dumps([str(data / "val.json")]),
    }
    if args.max_steps:
        overrides["--trainer.max_steps"] = str(args.max_steps)
    config = str(ROOT / "configs/experiments/quickstart.yaml")
    cli = fit(["fit", "--config", config, *[x for kv in overrides.items() for x in kv]])
    trained = time.perf_counter()

    model_dir = run_dir / "model"
    model = VideoLM.from_pretrained(model_dir)
    report = evaluate(
        model,
        EvalConfig(
            task="nextqa",
            question_file=data / "nextqa.csv",
            video_root=data / "videos",
            output_dir=run_dir / "eval",
            model_path=str(model_dir),
            strategy="loglik",
        ),
    ).report
    chance = 1 / 5
    result = {
        "accuracy": report["accuracy"],
        "chance": chance,
        "per_type": {k: v["accuracy"] for k, v in report["per_type"].items()},
        "steps": cli.trainer.global_step,
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
