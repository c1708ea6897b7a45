"""Action recognition and fall detection: label classification as a task kind of the evaluation runner.

`labels` reads a label from a reply, `data` reads classification datasets and writes instruction files,
`exemplars` picks few-shot clips, `predict` holds the four prediction modes (zero-shot, few-shot, cot,
loglik), `evaluation` runs them through `merv.eval.runner` (chunks, resume, merge, one report writer) and
builds the report with the clinical metrics of `merv.eval.metrics`.
"""

from merv.data.dataset import SkipRateError
from merv.eval.action.cli import eval_main, prepare_main
from merv.eval.action.data import (
    ACTION_QUESTION,
    COT_INSTRUCTION,
    ActionTask,
    instruction_record,
    load_action_records,
    oversample_classes,
    write_instruction_file,
)
from merv.eval.action.evaluation import (
    ActionEvalConfig,
    action_job,
    action_report,
    evaluate_action,
    log_report_to_tensorboard,
    prediction_settings,
)
from merv.eval.action.exemplars import ExemplarSelector, clip_embedding
from merv.eval.action.labels import (
    DEFAULT_SYNONYMS,
    LabelParser,
    ParsedLabel,
    parse_class_list,
    parse_label_map,
)
from merv.eval.action.predict import MODES, PROMPT_VERSION, predict_record
from merv.eval.metrics import UNPARSED
from merv.eval.runner import summary_line

__all__ = [
    "ACTION_QUESTION",
    "COT_INSTRUCTION",
    "DEFAULT_SYNONYMS",
    "MODES",
    "PROMPT_VERSION",
    "UNPARSED",
    "ActionEvalConfig",
    "ActionTask",
    "ExemplarSelector",
    "LabelParser",
    "ParsedLabel",
    "SkipRateError",
    "action_job",
    "action_report",
    "clip_embedding",
    "eval_main",
    "evaluate_action",
    "instruction_record",
    "load_action_records",
    "log_report_to_tensorboard",
    "oversample_classes",
    "parse_class_list",
    "parse_label_map",
    "predict_record",
    "prediction_settings",
    "prepare_main",
    "summary_line",
    "write_instruction_file",
]
