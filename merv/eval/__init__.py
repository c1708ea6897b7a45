"""Benchmark evaluation: registered tasks, MCQ answer parsing, open-ended judges, the chunked runner, reports.

`merv.eval` depends on `merv.video`, `merv.models` and `merv.data` only (never on Lightning). Every task kind
(multiple choice, open-ended, label classification) runs through `merv.eval.runner`.
"""

# `merv.eval.action` registers the `action` report kind with the runner.
from merv.eval.action import ActionEvalConfig, evaluate_action
from merv.eval.judge import (
    JUDGE_PROMPT_VERSION,
    JudgeCache,
    JudgeConfig,
    JudgedItem,
    JudgeError,
    LocalHFJudge,
    OpenAIChatJudge,
    Verdict,
    exact_match,
    judge_predictions,
    normalize_answer_text,
    parse_verdict,
    string_match_report,
    summarize_judgements,
    token_f1,
)
from merv.eval.loading import ModelConfig, load_model
from merv.eval.parsing import ParsedAnswer, parse_mcq_answer
from merv.eval.runner import (
    EvalConfig,
    EvalOutcome,
    MergeError,
    ResumeMismatchError,
    SkipRateError,
    evaluate,
    merge_chunks,
    predict_item,
    run_chunk,
    summary_line,
    write_report,
)
from merv.eval.tasks import (
    AnnotationError,
    EvalItem,
    EvalTask,
    answer_option_index,
    get_task,
    list_tasks,
    register_task,
)

__all__ = [
    "JudgeConfig",
    "ModelConfig",
    "load_model",
    "ActionEvalConfig",
    "evaluate_action",
    "JUDGE_PROMPT_VERSION",
    "AnnotationError",
    "EvalConfig",
    "EvalItem",
    "EvalOutcome",
    "EvalTask",
    "JudgeCache",
    "JudgeError",
    "JudgedItem",
    "LocalHFJudge",
    "MergeError",
    "OpenAIChatJudge",
    "ParsedAnswer",
    "ResumeMismatchError",
    "SkipRateError",
    "Verdict",
    "evaluate",
    "exact_match",
    "get_task",
    "judge_predictions",
    "list_tasks",
    "merge_chunks",
    "answer_option_index",
    "normalize_answer_text",
    "parse_mcq_answer",
    "parse_verdict",
    "predict_item",
    "register_task",
    "run_chunk",
    "string_match_report",
    "summarize_judgements",
    "summary_line",
    "token_f1",
    "write_report",
]
