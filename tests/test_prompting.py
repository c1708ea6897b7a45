"""Prompt formats and label masking: built-in builders, chat templates, placeholder positions."""

import pytest
import torch

from merv.models import VideoLM, VideoLMConfig, build_tiny_tokenizer
from merv.models.processor import IGNORE_INDEX, VideoLMProcessor
from merv.models.prompting import PromptBuilder, PromptFormat
from merv.video import FrameSpec

# Chat templates render with trim_blocks, so the newline after `{% endif %}` disappears.
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}</s>{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CONV = [
    {"from": "human", "value": "<video>\nWhat colour?"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "Which way?"},
    {"from": "gpt", "value": "left"},
]


def processor(tokenizer, fmt: str, visual: int = 3) -> VideoLMProcessor:
    spec = FrameSpec(2, 8, (0.5,) * 3, (0.5,) * 3)
    return VideoLMProcessor(tokenizer, PromptFormat(fmt, tokenizer.eos_token, tokenizer), [spec], visual)


def targets(proc, item) -> list[str]:
    """Decode each contiguous run of labelled tokens."""
    runs, current = [], []
    for tok, lab in zip(item["input_ids"].tolist(), item["labels"].tolist()):
        if lab != IGNORE_INDEX:
            current.append(tok)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [proc.tokenizer.decode(r) for r in runs]


@pytest.mark.parametrize("fmt", ["merv", "vicuna", "llama2"])
def test_builtin_formats_label_every_answer_with_its_eos(fmt):
    tok = build_tiny_tokenizer()
    proc = processor(tok, fmt)
    item = proc.encode(CONV, num_videos=1)
    assert targets(proc, item) == ["red</s>", "left</s>"]
    assert item["input_ids"][0] == tok.bos_token_id
    assert int(item["video_mask"].sum()) == 3


def test_merv_format_text_and_builder_match_training_prefix():
    tok = build_tiny_tokenizer()
    fmt = PromptFormat("merv", tok.eos_token)
    builder = PromptBuilder(fmt)
    builder.add_turn(role="human", message="What colour?")
    assert builder.get_prompt() == "In: What colour?\nOut: "
    builder.add_turn(role="gpt", message="red")
    builder.add_turn(role="human", message="Which way?")
    assert builder.get_prompt() == "In: What colour?\nOut: red</s>\nIn: Which way?\nOut: "


def test_chat_template_is_used_when_the_tokenizer_has_one():
    tok = build_tiny_tokenizer()
    tok.chat_template = TEMPLATE
    proc = processor(tok, "chat_template")
    item = proc.encode(CONV, num_videos=1)
    assert targets(proc, item) == ["red</s>", "left</s>"]
    builder = PromptBuilder(proc.prompt_format)
    builder.add_turn("human", "hello")
    assert builder.get_prompt() == "<|user|>hello<|assistant|>"


def test_auto_format_picks_chat_template_or_merv():
    model = VideoLM(VideoLMConfig.tiny())
    assert model.processor.prompt_format.name == "merv"
    tok = build_tiny_tokenizer()
    tok.chat_template = TEMPLATE
    model = VideoLM(VideoLMConfig.tiny(), tokenizer=tok)
    assert model.processor.prompt_format.name == "chat_template"


@pytest.mark.parametrize(
    "value, before, after",
    [
        ("<video>\nWhat colour?", "In: ", "\nWhat colour?\nOut: red"),
        ("What colour?\n<video>", "In: What colour?\n", "\nOut: red"),
        ("What colour?", "", "In: What colour?\nOut: red"),  # no tag: right after BOS
    ],
)
def test_visual_tokens_go_at_the_placeholder_or_after_bos(value, before, after):
    tok = build_tiny_tokenizer()
    proc = processor(tok, "merv")
    item = proc.encode([{"from": "human", "value": value}, {"from": "gpt", "value": "red"}], num_videos=1)
    mask = item["video_mask"].tolist()
    first = mask.index(True)
    assert sum(mask) == 3 and all(mask[first : first + 3])
    ids = item["input_ids"].tolist()
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids[1:first]) == before
    assert tok.decode(ids[first + 3 :]).startswith(after)


def test_text_only_and_video_samples_mix_in_one_batch():
    model = VideoLM(VideoLMConfig.tiny())
    frames = torch.randint(0, 255, (6, 16, 16, 3), dtype=torch.uint8)
    batch = model.prepare_batch(
        [
            {"video": None, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            {"video": frames, "conversations": CONV[:2]},
        ]
    )
    assert [p.shape[0] for p in batch["pixel_values"]] == [1, 1]
    assert batch["video_mask"][0].sum() == 0 and batch["video_mask"][1].sum() == model.num_visual_tokens
    assert torch.isfinite(model(**batch).loss)


@pytest.mark.parametrize(
    "conv, match",
    [
        ([{"from": "human", "value": "hi"}], "end with a gpt turn"),
        ([{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}], "unknown role"),
        ([{"from": "gpt", "value": "hi"}, {"from": "gpt", "value": "x"}], "must alternate"),
        ([{"value": "hi"}, {"from": "gpt", "value": "x"}], "turn 0"),
    ],
)
def test_malformed_conversations_raise_clear_errors(conv, match):
    proc = processor(build_tiny_tokenizer(), "merv")
    with pytest.raises(ValueError, match=match):
        proc.encode(conv, num_videos=0)


def test_several_videos_fill_their_tags_in_order():
    model = VideoLM(VideoLMConfig.tiny())
    videos = [torch.full((6, 16, 16, 3), v, dtype=torch.uint8) for v in (0, 128, 255)]
    conv = [
        {"from": "human", "value": "Example: <video> is dark. Example: <video> is grey. Now <video>?"},
        {"from": "gpt", "value": "bright"},
    ]
    batch = model.prepare_batch([{"video": videos, "conversations": conv}, sample_one(videos[2])])
    assert [p.shape[0] for p in batch["pixel_values"]] == [4, 4]
    assert int(batch["video_mask"][0].sum()) == 3 * model.num_visual_tokens
    assert torch.isfinite(model(**batch).loss)
    # The third video of the first sample and the only video of the second are the same pixels.
    torch.testing.assert_close(batch["pixel_values"][0][2], batch["pixel_values"][0][3])
    text = model.generate(videos, "In: <video> <video> <video>?\nOut: ", max_new_tokens=3)
    assert isinstance(text, str)


def sample_one(video):
    return {"video": video, "conversations": CONV[:2]}


def test_tag_count_must_match_the_number_of_videos():
    proc = processor(build_tiny_tokenizer(), "merv")
    with pytest.raises(ValueError, match="2 <video> tags for 1 videos"):
        proc.encode([{"from": "human", "value": "<video> and <video>"}, {"from": "gpt", "value": "x"}], num_videos=1)
    with pytest.raises(ValueError, match="1 <video> tags for 0 videos"):
        proc.encode(CONV[:2], num_videos=0)


def test_untagged_video_goes_after_the_bos_a_chat_template_writes():
    tok = build_tiny_tokenizer()
    tok.chat_template = "{{ bos_token }}" + TEMPLATE
    proc = processor(tok, "chat_template")
    builder = PromptBuilder(proc.prompt_format)
    builder.add_turn("human", "What colour?")
    conv = [{"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "red"}]
    for item in (proc.encode(conv, num_videos=1), proc.encode_prompt(builder.get_prompt(), num_videos=1)):
        ids, mask = item["input_ids"].tolist(), item["video_mask"].tolist()
        assert ids[0] == tok.bos_token_id
        assert mask[:4] == [False, True, True, True] and sum(mask) == 3
        assert tok.decode(ids[4:]).startswith("<|user|>What colour?")


def test_a_prompt_longer_than_max_length_raises_instead_of_losing_its_end():
    tok = build_tiny_tokenizer()
    fmt = PromptFormat("merv", tok.eos_token)
    proc = VideoLMProcessor(tok, fmt, [FrameSpec(2, 8, (0.5,) * 3, (0.5,) * 3)], 3, max_length=12)
    builder = PromptBuilder(fmt)
    builder.add_turn("human", "What is the person doing in the video, and which way does the camera move?")
    with pytest.raises(ValueError, match=r"the prompt is \d+ tokens \(3 visual \+ \d+ text\), more than max_length=12"):
        proc.encode_prompt(builder.get_prompt(), num_videos=1)
    # Training conversations are still cut at the end: their labels are cut with them.
    conv = [{"from": "human", "value": "What is the person doing?"}, {"from": "gpt", "value": "walking left"}]
    assert len(proc.encode(conv, num_videos=1)["input_ids"]) == 12


def test_a_rejected_turn_leaves_the_builder_unchanged():
    builder = PromptBuilder(PromptFormat("merv", "</s>"))
    builder.add_turn("human", "What colour?")
    with pytest.raises(ValueError, match="must alternate"):
        builder.add_turn("human", "Which way?")
    assert builder.turns == [("human", "What colour?")]
    builder.add_turn("gpt", "red")
    builder.add_turn("human", "Which way?")
    assert builder.get_prompt() == "In: What colour?\nOut: red</s>\nIn: Which way?\nOut: "


def test_collate_rejects_an_unknown_padding_side():
    proc = processor(build_tiny_tokenizer(), "merv")
    item = proc.encode(CONV[:2], num_videos=1)
    assert proc.collate([item], padding_side="left")["input_ids"].shape == (1, len(item["input_ids"]))
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right'"):
        proc.collate([item], padding_side="center")
