"""Synthetic video datasets that a tiny model with frozen random encoders can learn, in the public formats.

`python -m merv.data.synthetic --out DIR --num_videos N --seed S` writes real mp4 files (64x64, 16 frames
at 8 fps) and their annotations; the same seed gives byte-identical files. Two families:

* shapes: one large coloured shape moving across a dark frame -> alignment captions, instruction
  conversations (LLaVA format), validation conversations in the same format, an MCQ set (NExT-QA CSV)
  and open-ended QA (MSVD-QA form);
* actions: a block "person" that walks, falls, sits down, stands or lies on a bed -> an OmniFall label
  CSV with split files.

The validation conversations, the MCQ / open-ended files and the action test split use videos that no
training file uses. Training and validation files are read by `merv.data.load_annotations`, the benchmark
files by the `nextqa` and `msvd` tasks of `merv.eval`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from merv.data.formats import OMNIFALL_CLASSES
from merv.models.prompting import GPT, HUMAN, VIDEO_TOKEN

logger = logging.getLogger(__name__)

SIZE = 64
NUM_FRAMES = 16
FPS = 8
DURATION = NUM_FRAMES / FPS

COLOURS = {"red": (225, 35, 35), "green": (35, 205, 60), "blue": (45, 80, 240), "yellow": (240, 220, 35)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
SHAPE_SIZE = 22  # about a third of the frame side: a strong, global signal
_TRAVEL = (14.0, 50.0)  # shape centre moves between these coordinates, staying inside the frame

ACTIONS = ("walk", "fall", "sit_down", "standing", "lying")
FLOOR_Y = 54
PERSON_WIDTH, PERSON_HEIGHT, HEAD_RADIUS = 8, 30, 4
BED_COLOUR = (150, 60, 170)
PERSON_COLOURS = ((235, 235, 235), (240, 200, 160), (200, 230, 255), (255, 190, 120))
# Split of the k-th video of an action class; the offset per class spreads val/test over classes.
_SPLIT_PATTERN = ("train", "train", "test", "train", "val")

# The last two are the multiple-choice questions' own wording (NExT-QA style: lower case, no question
# mark), so the held-out MCQ asks in a phrasing the captions were trained with, as a benchmark's train split would.
_MCQ_QUESTIONS = (
    ("what happens in the video", "appearance", "DC"),
    ("how does the shape move in the video", "direction", "TN"),
)
_DESCRIBE_PROMPTS = (
    "Describe the video.",
    "What happens in this video?",
    "Give a short caption for this video.",
    "Describe what you see in the clip.",
    *(question for question, _, _ in _MCQ_QUESTIONS),
)
_QUESTIONS = {
    "colour": ("What colour is the shape?", "Which colour does the object have?", "What is the colour of the shape?"),
    "shape": ("What shape is shown?", "Which shape appears in the video?", "What kind of shape is it?"),
    "direction": (
        "Which direction does the shape move?",
        "Where does the shape go?",
        "In which direction is it moving?",
    ),
}


# ---- rendering ------------------------------------------------------------------------------------

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _background(rng: np.random.Generator) -> np.ndarray:
    tint = rng.integers(0, 40, size=3)
    return np.broadcast_to(tint.astype(np.uint8), (SIZE, SIZE, 3)).copy()


def _shape_mask(shape: str, cx: float, cy: float) -> np.ndarray:
    r = SHAPE_SIZE / 2
    if shape == "circle":
        return (_XX - cx) ** 2 + (_YY - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(_XX - cx) <= r) & (np.abs(_YY - cy) <= r)
    # Upward triangle: half-width grows from 0 at the apex to r at the base.
    depth = _YY - (cy - r)
    return (depth >= 0) & (depth <= 2 * r) & (np.abs(_XX - cx) <= depth / 2)


def render_shape_video(colour: str, shape: str, direction: str, offset: float, rng: np.random.Generator) -> np.ndarray:
    """`(16, 64, 64, 3)` uint8 frames of one shape crossing the frame; `offset` shifts the cross-axis position."""
    background = _background(rng)
    lo, hi = _TRAVEL
    frames = []
    for t in range(NUM_FRAMES):
        along = lo + (hi - lo) * t / (NUM_FRAMES - 1)
        if direction in ("left", "up"):
            along = lo + hi - along
        cx, cy = (along, SIZE / 2 + offset) if direction in ("left", "right") else (SIZE / 2 + offset, along)
        frame = background.copy()
        frame[_shape_mask(shape, cx, cy)] = COLOURS[colour]
        frames.append(frame)
    return np.stack(frames)


def _person_mask(foot_x: float, angle: float, height: float, side: int, floor: float) -> np.ndarray:
    """Body block plus head, pivoting at the feet; `angle` 0 is upright, pi/2 is lying towards `side`."""
    axis = np.array([side * math.sin(angle), -math.cos(angle)])  # image coordinates, y down
    normal = np.array([math.cos(angle), side * math.sin(angle)])
    # Raise the pivot as the body tips so a lying body rests on the floor instead of sinking into it.
    px, py = foot_x, floor - (PERSON_WIDTH / 2) * math.sin(angle)
    dx, dy = _XX - px, _YY - py
    along = dx * axis[0] + dy * axis[1]
    across = dx * normal[0] + dy * normal[1]
    body = (along >= 0) & (along <= height) & (np.abs(across) <= PERSON_WIDTH / 2)
    hx, hy = px + axis[0] * (height + HEAD_RADIUS), py + axis[1] * (height + HEAD_RADIUS)
    head = (_XX - hx) ** 2 + (_YY - hy) ** 2 <= HEAD_RADIUS**2
    return body | head


def render_action_video(action: str, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Frames of one action and its labelled segments as `(label, first_frame, end_frame_exclusive)`."""
    background = _background(rng)
    background[FLOOR_Y:] = (70, 58, 48)
    colour = PERSON_COLOURS[int(rng.integers(len(PERSON_COLOURS)))]
    side = 1 if rng.random() < 0.5 else -1
    foot_x = float(rng.uniform(20, 44))
    fall_start = int(rng.integers(2, 6))
    fall_frames = 4
    frames = []
    for t in range(NUM_FRAMES):
        frame = background.copy()
        floor, angle, height, x = FLOOR_Y, 0.0, float(PERSON_HEIGHT), foot_x
        if action == "walk":
            x = 10 + 44 * t / (NUM_FRAMES - 1)
            x = x if side > 0 else SIZE - x
        elif action == "fall":
            progress = min(max((t - fall_start + 1) / fall_frames, 0.0), 1.0)
            angle = progress * math.pi / 2
            x = SIZE / 2 - side * PERSON_HEIGHT / 2
        elif action == "sit_down":
            progress = min(max((t - 3) / 8, 0.0), 1.0)
            height = PERSON_HEIGHT * (1 - 0.5 * progress)
        elif action == "lying":
            floor, angle = FLOOR_Y - 10, math.pi / 2
            x = SIZE / 2 - side * PERSON_HEIGHT / 2
            frame[floor:FLOOR_Y, 6 : SIZE - 6] = BED_COLOUR
        frame[_person_mask(x, angle, height, side, floor)] = colour
        frames.append(frame)
    if action == "fall":
        down = fall_start + fall_frames
        segments = [("fall", 0, down), ("fallen", down, NUM_FRAMES)]
    else:
        segments = [(action, 0, NUM_FRAMES)]
    return np.stack(frames), segments


# ---- encoding -------------------------------------------------------------------------------------


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode `(T, H, W, 3)` uint8 RGB frames to mp4, byte-reproducibly.

    Reproducibility: one encoder thread (x264's output depends on its thread count), x264's macroblock-tree
    rate control off (with it, runs in separate processes produced different bytes now and then), and the
    bitexact flags, which keep library version strings and creation times out of the container.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    options = (
        {"crf": "16", "preset": "medium", "threads": "1", "x264-params": "mbtree=0"}
        if codec == "libx264"
        else {"qscale": "2"}
    )
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        stream.codec_context.time_base = Fraction(1, fps)
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for t, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# ---- annotations ----------------------------------------------------------------------------------


def caption(colour: str, shape: str, direction: str) -> str:
    """The ground-truth sentence of a shapes video, e.g. `a red circle moves left`."""
    return f"a {colour} {shape} moves {direction}"


def _with_placeholder(text: str, at_end: bool) -> str:
    return f"{text}\n{VIDEO_TOKEN}" if at_end else f"{VIDEO_TOKEN}\n{text}"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _mcq_options(truth: tuple[str, str, str], vary: str, rng: np.random.Generator) -> tuple[list[str], int]:
    """Five captions: the truth and four distractors that each change exactly one attribute.

    `vary="appearance"` draws distractors from colour and shape changes, `"direction"` uses the three other
    directions plus one appearance change.
    """
    colour, shape, direction = truth
    appearance = [(c, shape, direction) for c in COLOURS if c != colour]
    appearance += [(colour, s, direction) for s in SHAPES if s != shape]
    if vary == "direction":
        distractors = [(colour, shape, d) for d in DIRECTIONS if d != direction]
        distractors.append(appearance[int(rng.integers(len(appearance)))])
    else:
        distractors = [appearance[i] for i in rng.choice(len(appearance), size=4, replace=False)]
    options = [truth, *distractors]
    order = rng.permutation(len(options))
    shuffled = [caption(*options[i]) for i in order]
    return shuffled, int(np.flatnonzero(order == 0)[0])


def _conversations(videos: list[dict[str, Any]], rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """LLaVA-format records of shapes videos: one caption each, and one conversation of one to three questions."""
    captions, instruct = [], []
    for v in videos:
        truth = (v["colour"], v["shape"], v["direction"])
        prompt = _DESCRIBE_PROMPTS[int(rng.integers(len(_DESCRIBE_PROMPTS)))]
        captions.append(
            {
                "id": f"{v['name']}_caption",
                "video": f"videos/{v['name']}.mp4",
                "conversations": [
                    {"from": HUMAN, "value": _with_placeholder(prompt, at_end=False)},
                    {"from": GPT, "value": caption(*truth)},
                ],
            }
        )
        answers = {"colour": v["colour"], "shape": v["shape"], "direction": v["direction"]}
        topics = [list(_QUESTIONS)[j] for j in rng.permutation(len(_QUESTIONS))[: int(rng.integers(1, 4))]]
        turns = []
        for n, topic in enumerate(topics):
            question = _QUESTIONS[topic][int(rng.integers(len(_QUESTIONS[topic])))]
            if n == 0:
                question = _with_placeholder(question, at_end=bool(rng.random() < 0.5))
            turns += [{"from": HUMAN, "value": question}, {"from": GPT, "value": answers[topic]}]
        instruct.append({"id": f"{v['name']}_instruct", "video": f"videos/{v['name']}.mp4", "conversations": turns})
    return captions, instruct


def _shapes(out: Path, num_videos: int, rng: np.random.Generator, seed: int) -> dict[str, Any]:
    combos = [(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]
    order = rng.permutation(len(combos))
    num_eval = max(1, num_videos // 4)
    videos = []
    for i in range(num_videos):
        colour, shape, direction = combos[order[i % len(combos)]]
        name = f"shape_{i:04d}"
        frames = render_shape_video(colour, shape, direction, float(rng.uniform(-8, 8)), rng)
        write_video(out / "videos" / f"{name}.mp4", frames)
        videos.append({"index": i, "name": name, "colour": colour, "shape": shape, "direction": direction})
        if (i + 1) % 16 == 0 or i + 1 == num_videos:
            logger.info("shapes: %d/%d videos", i + 1, num_videos)
    train, held_out = videos[: num_videos - num_eval], videos[num_videos - num_eval :]

    captions, instruct = _conversations(train, rng)
    _write_json(out / "captions.json", captions)
    _write_json(out / "instruct.json", instruct)
    # The validation conversations draw from their own generator, so they leave every other file as it is.
    val_captions, val_instruct = _conversations(held_out, np.random.default_rng([seed, 1]))
    _write_json(out / "val.json", val_captions + val_instruct)

    # NExT-QA: integer-like video ids mapped to files by map_vid_vidorID.json, as in the original release.
    mcq_rows, video_map = [], {}
    header = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type"]
    header += [f"a{i}" for i in range(5)]
    for v in held_out:
        video_id = str(v["index"])
        video_map[video_id] = f"videos/{v['name']}"
        truth = (v["colour"], v["shape"], v["direction"])
        for qid, (question, vary, qtype) in enumerate(_MCQ_QUESTIONS):
            options, answer = _mcq_options(truth, vary, rng)
            mcq_rows.append([video_id, NUM_FRAMES, SIZE, SIZE, question, answer, qid, qtype, *options])
    _write_csv(out / "nextqa.csv", header, mcq_rows)
    _write_json(out / "map_vid_vidorID.json", video_map)

    # MSVD-QA: questions and answers in two arrays joined by question_id; videos under msvd/videos/.
    questions, answers_out = [], []
    qa_kinds = [
        ("what color is the shape?", "colour", 4),
        ("what shape is in the video?", "shape", 5),
        ("which way does the shape move?", "direction", 0),
    ]
    (out / "msvd" / "videos").mkdir(parents=True, exist_ok=True)
    for v in held_out:
        shutil.copyfile(out / "videos" / f"{v['name']}.mp4", (out / "msvd" / "videos").joinpath(f"{v['name']}.mp4"))
        for n, (question, key, qtype) in enumerate(qa_kinds):
            qid = f"{v['name']}_{n}"
            questions.append({"video_name": v["name"], "question": question, "question_id": qid})
            answers_out.append({"answer": v[key], "type": qtype, "question_id": qid})
    _write_json(out / "msvd" / "test_q.json", questions)
    _write_json(out / "msvd" / "test_a.json", answers_out)
    return {
        "videos": num_videos,
        "train_videos": len(train),
        "held_out_videos": len(held_out),
        "captions.json": len(captions),
        "instruct.json": len(instruct),
        "val.json": len(val_captions) + len(val_instruct),
        "nextqa.csv": len(mcq_rows),
        "msvd/test_q.json": len(questions),
    }


def _actions(out: Path, num_videos: int, rng: np.random.Generator) -> dict[str, Any]:
    fall = out / "fall"
    rows, splits = [], {"train": [], "val": [], "test": []}
    for i in range(num_videos):
        action = ACTIONS[i % len(ACTIONS)]
        k = i // len(ACTIONS)
        path = f"subject_{k % 4 + 1}/{action}_{i:04d}"
        frames, segments = render_action_video(action, rng)
        write_video(fall / "video" / f"{path}.mp4", frames)
        for label, first, stop in segments:
            rows.append([path, OMNIFALL_CLASSES.index(label), first / FPS, stop / FPS, k % 4 + 1, 0, "synthetic"])
        splits[_SPLIT_PATTERN[(k + ACTIONS.index(action)) % len(_SPLIT_PATTERN)]].append(path)
        if (i + 1) % 16 == 0 or i + 1 == num_videos:
            logger.info("actions: %d/%d videos", i + 1, num_videos)
    _write_csv(fall / "labels.csv", ["path", "label", "start", "end", "subject", "cam", "dataset"], rows)
    for split, paths in splits.items():
        _write_csv(fall / "splits" / f"{split}.csv", ["path"], [[p] for p in paths])
    return {"videos": num_videos, "segments": len(rows), **{f"{s} videos": len(p) for s, p in splits.items()}}


def generate(out_dir: str | Path, num_videos: int = 48, seed: int = 0) -> dict[str, Any]:
    """Write both synthetic datasets under `out_dir`.

    Args:
        out_dir: output folder (created; existing files with the same names are overwritten).
        num_videos: videos per family (shapes and actions), at least 5.
        seed: random seed; the same seed writes byte-identical files.

    Returns:
        A summary: counts per family and file, the training and validation files with their
        `load_annotations` formats, and the benchmark files with their `merv.eval` task names.
    """
    if num_videos < 5:
        raise ValueError(f"num_videos must be at least 5 (one held-out video and every action), got {num_videos}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    summary = {
        "out_dir": str(out),
        "seed": seed,
        "shapes": _shapes(out, num_videos, rng, seed),
        "actions": _actions(out, num_videos, rng),
        "annotations": {
            "captions.json": "llava",
            "instruct.json": "llava",
            "val.json": "llava",
            "fall/labels.csv": "omnifall",
        },
        "benchmarks": {"nextqa.csv": "nextqa", "msvd/test_q.json": "msvd"},
    }
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point: parse arguments, generate, log the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num_videos", type=int, default=48, help="videos per family (shapes, actions)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; equal seeds give identical files")
    parser.add_argument("--log_level", default="INFO", help="logging level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    summary = generate(args.out, args.num_videos, args.seed)
    logger.info("wrote:\n%s", json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
