"""`merv eval mcq|openended|judge|action|table|merge`: evaluation command lines built from the typed configs.

Every option comes from a config dataclass (`ModelConfig`, `EvalConfig`, `JudgeConfig`, `ActionEvalConfig`)
through jsonargparse, so its name, type, default and help are written once, on the field. Options are
snake_case, `--model` names the model (a saved dir, a `.ckpt`, a run dir or a registered name), judge options
are grouped under `--judge.*`, and `--config file.yaml` reads any of them from a file (later flags win).

    merv eval mcq --model runs/m/model --task nextqa --question_file data/nextqa/val.csv \\
        --video_root data/nextqa/videos --strategy loglik --num_chunks 4 --chunk_idx 0
    merv eval openended --model runs/m/model --task msvd --question_file test_q.json --answer_file test_a.json \\
        --judge.kind openai --judge.model gpt-4o-mini
    merv eval judge --predictions eval_results/m/msvd_pred_merge.jsonl --output_file msvd_judge.json
    merv eval action --model runs/fall/model --labels fall/labels.csv --split_file fall/splits/test.csv --mode loglik
    merv eval table eval_results/m1 eval_results/m2
    merv eval merge --output_dir eval_results/m --name nextqa_loglik --num_chunks 4

`python -m merv.cli.eval ...` runs the same command line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from merv.data.dataset import SkipRateError
from merv.eval.action.evaluation import ActionEvalConfig
from merv.eval.commands import merge_run, results_table, run_action, run_benchmark, run_judge
from merv.eval.judge import JudgeConfig
from merv.eval.loading import ModelConfig
from merv.eval.runner import EvalConfig, MergeError, ResumeMismatchError, summary_line
from merv.eval.tasks import get_task, list_tasks

log = logging.getLogger(__name__)

CHUNK_PENDING = "chunk finished; the report is written once every chunk has finished"


def _command(description: str) -> ArgumentParser:
    parser = ArgumentParser(description=description)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    return parser


def _benchmark_command(kind: str, description: str) -> ArgumentParser:
    parser = _command(f"{description} Tasks: {', '.join(list_tasks(kind))}.")  # type: ignore[arg-type]
    parser.add_class_arguments(ModelConfig, as_group=False)
    skip = {"model_path"} if kind == "mcq" else {"model_path", "strategy"}
    parser.add_class_arguments(EvalConfig, skip=skip, as_group=False)
    # A bare switch like every other boolean of the merv command (`--merge_lora`, `--overwrite`).
    parser.add_argument(
        "--merge_only", type=bool, nargs="?", const=True, default=False, help="only merge finished chunks and report"
    )
    return parser


def build_parser() -> ArgumentParser:
    """The `merv eval` parser with its six subcommands."""
    parser = ArgumentParser(prog="merv eval", description=__doc__.splitlines()[0])
    commands = parser.add_subcommands(dest="command")

    commands.add_subcommand(
        "mcq",
        _benchmark_command("mcq", "Predict one chunk of a multiple-choice benchmark; report when all are done."),
        help="multiple-choice benchmark (generated letter or option log-likelihood)",
    )
    openended = _benchmark_command(
        "openended", "Predict one chunk of an open-ended benchmark; score it when all chunks are done."
    )
    openended.add_class_arguments(JudgeConfig, "judge")
    commands.add_subcommand("openended", openended, help="open-ended QA benchmark (string match and a judge)")

    judge = _command("Score a file of open-ended predictions with an LLM judge or string match.")
    judge.add_argument("--predictions", type=str, required=True, help="JSON lines or list: id, question, answer, pred")
    judge.add_argument("--output_file", type=str, required=True, help="report JSON to write")
    judge.add_argument("--task", type=str | None, default=None, help="task whose question-type names to use")
    judge.add_class_arguments(JudgeConfig, "judge")
    commands.add_subcommand("judge", judge, help="judge a predictions file")

    action = _command("Classify clips (action recognition, fall detection) and report the clinical metrics.")
    action.add_class_arguments(ModelConfig, as_group=False)
    action.add_class_arguments(ActionEvalConfig, skip={"model_path"}, as_group=False)
    action.add_argument("--tensorboard_dir", type=str | None, default=None, help="also log the metrics here")
    commands.add_subcommand("action", action, help="label classification: zero-shot, few-shot, cot, loglik")

    table = _command("A Markdown table of the headline metrics of every report under the folders.")
    table.add_argument("output_dirs", nargs="+", type=str, help="folders holding reports, e.g. eval_results/m1")
    table.add_argument("--output_file", type=str | None, default=None, help="write the table here too")
    commands.add_subcommand("table", table, help="compare runs: one Markdown row per report")

    merge = _command("Merge the finished chunks of a run and write its report.")
    merge.add_argument("--output_dir", type=str, required=True, help="folder of <name>_pred_<n>_<k>.jsonl files")
    merge.add_argument("--name", type=str, required=True, help="run name: nextqa_naive, msvd, zero-shot, ...")
    merge.add_argument("--num_chunks", type=int, required=True, help="number of chunks the run was split into")
    commands.add_subcommand("merge", merge, help="merge chunk files by hand")
    return parser


def _config(cls: type, options: Namespace, **values: Any) -> Any:
    """The dataclass `cls` from the options that name its fields (plus `values`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(options).items() if k in names}, **values)


def _judge(options: Namespace) -> JudgeConfig:
    return JudgeConfig(**vars(options.judge))


def _print_report(report: dict[str, Any] | None) -> None:
    if report is None:
        print(CHUNK_PENDING)
        return
    print(summary_line(report))
    files = report.get("files")
    if files:
        print(f"report: {files['report']}  confusion matrix: {files['confusion_matrix_png']}")


def _configs(command: str, options: Namespace) -> dict[str, Any]:
    """The typed configs of one parsed subcommand; their checks (`__post_init__`) reject bad values here."""
    if command in ("mcq", "openended"):
        model = _config(ModelConfig, options)
        cfg = _config(EvalConfig, options, model_path=model.recorded_path)
        kind = get_task(cfg.task).kind
        if kind != command:
            raise ValueError(f"{cfg.task} is not a {command} task; use `merv eval {kind}`")
        judge = _judge(options) if command == "openended" else None
        return {"model": model, "cfg": cfg, "judge": judge, "merge_only": options.merge_only}
    if command == "judge":
        return {"judge": _judge(options)}
    if command == "action":
        model = _config(ModelConfig, options)
        return {"model": model, "cfg": _config(ActionEvalConfig, options, model_path=model.model)}
    return {}


def run(command: str, options: Namespace, configs: dict[str, Any]) -> None:
    """Run one parsed subcommand with its configs."""
    if command in ("mcq", "openended"):
        _print_report(
            run_benchmark(configs["model"], configs["cfg"], configs["judge"], merge_only=configs["merge_only"])
        )
    elif command == "judge":
        _print_report(run_judge(options.predictions, options.output_file, configs["judge"], options.task))
    elif command == "action":
        _print_report(run_action(configs["model"], configs["cfg"], options.tensorboard_dir))
    elif command == "table":
        table = results_table(options.output_dirs)
        if options.output_file:
            Path(options.output_file).parent.mkdir(parents=True, exist_ok=True)
            Path(options.output_file).write_text(table, encoding="utf-8")
        print(table, end="")
    elif command == "merge":
        _print_report(merge_run(options.output_dir, options.name, options.num_chunks))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `merv eval`; returns the process exit code.

    Args:
        argv: the arguments after `eval`; None = `sys.argv[1:]`.
    """
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    parser = build_parser()
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = options.command
    try:
        configs = _configs(command, options[command])
    except (ValueError, KeyError) as e:  # a value the configs refuse (chunk index, unknown task, judge model)
        parser.error(f"{command}: {e.args[0] if isinstance(e, KeyError) else e}")
    try:
        run(command, options[command], configs)
    except (FileNotFoundError, MergeError, ResumeMismatchError, SkipRateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
