"""Benchmark tasks, one module per benchmark family, registered by name.

Every module of this package is imported here, so a new benchmark is one new file: its reader, its prompt
settings and its report settings, registered with `@register_task`.
"""

import importlib
import pkgutil

from merv.data.formats import AnnotationError
from merv.eval.tasks.base import (
    MCQ_INSTRUCTION,
    MCQ_PROMPT_VERSION,
    OPENENDED_PROMPT_VERSION,
    EvalItem,
    EvalTask,
    TaskKind,
    TaskSource,
    build_mcq_prompt,
    build_openended_prompt,
    get_task,
    list_tasks,
    register_task,
)
from merv.eval.tasks.reading import VideoResolver, answer_option_index, file_identity, strip_option_prefixes

# Importing a family module registers its tasks; `base` and `reading` register none.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from merv.eval.tasks.nextqa import NEXTQA_COLUMNS  # noqa: E402  (registered above, re-exported for callers)

__all__ = [
    "MCQ_INSTRUCTION",
    "MCQ_PROMPT_VERSION",
    "NEXTQA_COLUMNS",
    "OPENENDED_PROMPT_VERSION",
    "AnnotationError",
    "EvalItem",
    "EvalTask",
    "TaskKind",
    "TaskSource",
    "VideoResolver",
    "build_mcq_prompt",
    "build_openended_prompt",
    "file_identity",
    "get_task",
    "list_tasks",
    "answer_option_index",
    "register_task",
    "strip_option_prefixes",
]
