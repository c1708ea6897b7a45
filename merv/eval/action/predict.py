"""The four prediction modes of label classification on one clip.

* `zero-shot`: ask, generate, parse the label from the reply;
* `few-shot`: `k` labelled clips as in-context turns before the query;
* `cot`: the model reasons first and ends with `The best answer is: <label>`; the label is read from the end;
* `loglik`: every allowed label is scored by its mean token NLL as the answer; no parsing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from merv.eval.action.data import ActionTask
from merv.eval.action.exemplars import ActionModel, clip_reference

Mode = Literal["zero-shot", "few-shot", "cot", "loglik"]
MODES: tuple[str, ...] = ("zero-shot", "few-shot", "cot", "loglik")

PROMPT_VERSION = "action-v1"
"""Changes whenever the question or the few-shot layout changes, so reports say which prompt they used."""

DEFAULT_MAX_NEW_TOKENS: dict[str, int | None] = {"zero-shot": 16, "few-shot": 16, "cot": 256, "loglik": None}
"""Generation length per mode (`loglik` generates nothing)."""


def _check_prompt_fits(model: ActionModel, prompt: str, num_videos: int) -> None:
    """A generation prompt cut at the model's `max_length` loses its end (the query): refuse it instead."""
    processor = getattr(model, "processor", None)
    limit = getattr(processor, "max_length", None)
    if limit is None:
        return
    try:
        length = len(processor.encode_prompt(prompt, num_videos=num_videos)["input_ids"])
    except ValueError as e:
        raise ValueError(f"the prompt with {num_videos} video(s) does not fit max_length={limit}: {e}") from None
    if length >= limit:
        raise ValueError(
            f"the prompt with {num_videos} video(s) reaches max_length={limit} tokens and would be cut; "
            "use fewer few-shot exemplars or a model with a longer max_length"
        )


def _generate(model: ActionModel, video: Any, prompt: str, record: Mapping[str, Any], max_new_tokens: int) -> str:
    _check_prompt_fits(model, prompt, len(video) if isinstance(video, list) else 1)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if not isinstance(video, list):
        kwargs.update(start=record.get("start"), end=record.get("end"))
    return model.generate(video, prompt, **kwargs)


def predict_record(
    model: ActionModel,
    task: ActionTask,
    record: Mapping[str, Any],
    mode: Mode = "zero-shot",
    *,
    exemplars: Sequence[Mapping[str, Any]] = (),
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """Predict the class of one clip (its `start`/`end` segment only).

    Args:
        model: the video language model.
        task: label set, question and parser.
        record: a record with `video`, optional `start`/`end` and `id`.
        mode: `zero-shot`, `few-shot`, `cot` or `loglik`.
        exemplars: the in-context clips for `few-shot` (records with `label`).
        max_new_tokens: generation length; None = the mode's default.

    Returns:
        `prediction` (class name or None), `reply`, `method` and, for `loglik`, `scores` (NLL per class);
        for `few-shot`, `exemplars` (their ids).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    tokens = max_new_tokens if max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS[mode]
    if mode == "loglik":
        nll = model.option_nll(
            record["video"], task.prompt(), list(task.classes), start=record.get("start"), end=record.get("end")
        )
        best = min(range(len(nll)), key=nll.__getitem__)
        scores = {c: round(float(v), 5) for c, v in zip(task.classes, nll)}
        return {"prediction": task.classes[best], "reply": task.classes[best], "method": "loglik", "scores": scores}
    builder = model.get_prompt_builder()
    video: Any = record["video"]
    out: dict[str, Any] = {}
    if mode == "few-shot":
        if not exemplars:
            raise ValueError("few-shot prediction needs exemplars")
        for ex in exemplars:
            builder.add_turn("human", task.prompt())
            builder.add_turn("gpt", ex["label"])
        video = [*(clip_reference(ex) for ex in exemplars), clip_reference(record)]
        out["exemplars"] = [ex["id"] for ex in exemplars]
    builder.add_turn("human", task.prompt(cot=mode == "cot"))
    reply = _generate(model, video, builder.get_prompt(), record, tokens)
    parsed = task.parse(reply, from_end=mode == "cot")
    out.update(prediction=parsed.label, reply=reply, method=parsed.method)
    if parsed.method == "ambiguous":
        out["candidates"] = list(parsed.candidates)
    return out
