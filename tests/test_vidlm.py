"""VideoLM behaviour: frame counts, gradients per stage, learning, round trips, generation."""

import subprocess
import sys

import pytest
import torch

from merv.models import VideoLM, VideoLMConfig
from merv.models.processor import IGNORE_INDEX

FUSIONS = ["cross-attention", "sum", "concat-channel", "concat-sequence"]


def make_video(seed: int, frames: int = 12, size: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, size, size, 3), generator=g, dtype=torch.uint8)


def sample(seed: int, answer: str = "a red circle moves left") -> dict:
    return {
        "video": make_video(seed),
        "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."},
            {"from": "gpt", "value": answer},
        ],
    }


@pytest.fixture
def model() -> VideoLM:
    return VideoLM(VideoLMConfig.tiny())


def test_models_package_does_not_import_lightning():
    code = "import sys, merv.models, merv.models.loading; bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]; print(bad); sys.exit(bool(bad))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tiny_config_has_two_families_with_different_frame_counts(model):
    families = {type(e).__name__ for e in model.encoders}
    assert len(families) == 2
    assert model.processor.frame_counts == [4, 8]


def test_encoders_receive_their_configured_frame_counts(model):
    seen = []
    for enc in model.encoders:
        enc.register_forward_hook(lambda m, inp, out: seen.append((inp[0].shape[1], tuple(out.shape))))
    batch = model.prepare_batch([sample(0), sample(1)])
    out = model(**batch)
    assert [s[0] for s in seen] == [4, 8]
    assert [s[1][0] for s in seen] == [2, 2]
    assert torch.isfinite(out.loss)
    assert out.logits.shape[:2] == batch["input_ids"].shape


def test_normalized_pixels_are_the_processor_pixels_normalised_per_encoder(model):
    frames = make_video(0, frames=7, size=50).numpy()
    pixels = model.normalized_pixels(frames)
    raw = model.processor.preprocess(frames)
    assert [tuple(p.shape) for p in pixels] == [(4, 3, 32, 32), (8, 3, 32, 32)]
    assert all(p.dtype == torch.float32 for p in pixels) and all(r.dtype == torch.uint8 for r in raw)
    for spec, p, r in zip(model.processor.frame_specs, pixels, raw):
        torch.testing.assert_close(p, spec.normalize(r), rtol=0, atol=0)


def test_labels_cover_only_the_answer_and_end_of_turn(model):
    batch = model.prepare_batch([sample(0)])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    target = ids[labels != IGNORE_INDEX]
    tok = model.tokenizer
    assert tok.decode(target) == "a red circle moves left" + tok.eos_token
    assert int(batch["video_mask"].sum()) == model.num_visual_tokens
    assert not (labels[batch["video_mask"][0]] != IGNORE_INDEX).any()


def _grads(model, stage, fusion="cross-attention"):
    model = VideoLM(VideoLMConfig.tiny(fusion=fusion)) if fusion != "cross-attention" else model
    model.set_trainable(stage)
    model.train()
    out = model(**model.prepare_batch([sample(0), sample(1, "a blue square moves up")]))
    out.loss.backward()
    return model, out


@pytest.mark.parametrize("fusion", FUSIONS)
def test_align_trains_every_projector_and_fusion_parameter_and_nothing_else(model, fusion):
    model, _ = _grads(model, "align", fusion)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("projectors.", "fusion.")) for n in trainable)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"


def test_finetune_adds_llm_gradients_and_keeps_encoders_frozen(model):
    model, _ = _grads(model, "finetune")
    llm_grads = [p.grad for n, p in model.named_parameters() if n.startswith("llm.")]
    assert all(g is not None for g in llm_grads) and any(g.abs().sum() > 0 for g in llm_grads)
    assert all(p.grad is None for p in model.encoders.parameters())


def test_lora_trains_only_adapters_projectors_and_fusion(model):
    model, _ = _grads(model, "lora")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable)
    assert all(n.startswith(("projectors.", "fusion.")) or "lora_" in n for n in trainable)
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    # lora_B starts at zero, so at step 0 only lora_B receives a gradient; it must be nonzero.
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_fusion_weights_sum_to_one_per_sample(model):
    text_only = {"video": None, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    out = model(**model.prepare_batch([sample(0), text_only, sample(1)]))
    w = out.fusion_weights
    assert w.shape == (2, 2)  # the text-only sample has no video
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(2))
    assert not torch.equal(w[0], w[1])  # weights depend on the video
    torch.testing.assert_close(model.last_fusion_weights, w.detach())


def test_ten_steps_on_one_sample_halve_its_loss(model):
    model.set_trainable("finetune")
    model.train()
    batch = model.prepare_batch([sample(0)])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(10):
        loss = model(**batch).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = model(**batch).loss.item()
    assert final < losses[0] / 2, (losses, final)


@pytest.mark.parametrize("stage", ["align", "lora"])
def test_save_load_round_trip_gives_identical_logits(model, tmp_path, stage):
    model.set_trainable(stage)
    # Perturb trainable weights so the check covers what training changes.
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    batch = model.prepare_batch([sample(0), sample(3, "something else")])
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "ckpt")
    loaded = VideoLM.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(
        loaded(**loaded.prepare_batch([sample(0), sample(3, "something else")])).logits, expected, rtol=0, atol=0
    )


def test_lora_merge_on_save_keeps_the_function(model, tmp_path):
    model.set_trainable("lora")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.eval()
    batch = model.prepare_batch([sample(0)])
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "merged", merge_lora=True)
    loaded = VideoLM.from_pretrained(tmp_path / "merged")
    assert not hasattr(loaded.llm, "peft_config")
    torch.testing.assert_close(loaded(**batch).logits, expected, rtol=1e-4, atol=1e-4)


def test_generate_returns_text_and_checks_frame_counts(model):
    builder = model.get_prompt_builder()
    builder.add_turn(role="human", message="What is happening in the video?")
    text = model.generate(make_video(0), builder.get_prompt(), num_frames=[4, 8], max_new_tokens=5)
    assert isinstance(text, str)
    with pytest.raises(ValueError, match="frames per encoder"):
        model.generate(make_video(0), builder.get_prompt(), num_frames=[16, 16])


def test_batched_generate_matches_single(model):
    prompt = model.get_prompt_builder()
    prompt.add_turn("human", "Describe the video.")
    p = prompt.get_prompt()
    videos = [make_video(0), make_video(1, frames=20)]
    batched = model.generate(videos, [p, p + " It"], max_new_tokens=4)
    assert batched == [
        model.generate(videos[0], p, max_new_tokens=4),
        model.generate(videos[1], p + " It", max_new_tokens=4),
    ]


def test_option_nll_matches_a_direct_loss_computation(model):
    video = make_video(5)
    options = ["a red circle", "a blue square moving up"]
    nll = model.option_nll(video, "What is shown?", options)
    for opt, value in zip(options, nll):
        batch = model.prepare_batch(
            [
                {
                    "video": video,
                    "conversations": [
                        {"from": "human", "value": "<video>\nWhat is shown?"},
                        {"from": "gpt", "value": opt},
                    ],
                }
            ]
        )
        assert value == pytest.approx(model(**batch).loss.item(), rel=1e-5)


def _single_encoder(fusion: str) -> VideoLMConfig:
    config = VideoLMConfig.tiny(fusion=fusion)
    config.encoders = config.encoders[:1]
    return config


@pytest.mark.parametrize("fusion", ["cross-attention", "sum"])
def test_single_encoder_weighted_fusion_has_no_dead_parameters(fusion):
    model = VideoLM(_single_encoder(fusion))
    assert not list(model.fusion.parameters())
    model.set_trainable("align")
    out = model(**model.prepare_batch([sample(0), sample(1, "a blue square moves up")]))
    out.loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    torch.testing.assert_close(out.fusion_weights, torch.ones(2, 1))


def test_option_nll_without_a_video_scores_text_only(model):
    options = ["red", "a blue square"]
    nll = model.option_nll(None, "Which colour?", options)
    conv = [{"from": "human", "value": "Which colour?"}, {"from": "gpt", "value": options[1]}]
    direct = model(**model.prepare_batch([{"video": None, "conversations": conv}])).loss.item()
    assert nll[1] == pytest.approx(direct, rel=1e-5)


def test_generate_with_a_list_of_prompts_and_no_video(model):
    builder = model.get_prompt_builder()
    builder.add_turn("human", "Say something.")
    texts = model.generate(None, [builder.get_prompt()] * 2, max_new_tokens=3)
    assert isinstance(texts, list) and len(texts) == 2 and texts[0] == texts[1]


def test_video_positions_without_pixels_or_features_raise(model):
    batch = model.prepare_batch([sample(0)])
    with pytest.raises(ValueError, match="neither pixel_values nor aligned_features"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], video_mask=batch["video_mask"])


def test_visual_tokens_that_leave_no_room_for_text_fail_at_construction():
    config = VideoLMConfig.tiny(fusion="concat-sequence")  # 2 encoders x T=4 x 4 tokens = 32 visual tokens
    config.max_length = 32
    with pytest.raises(ValueError, match=r"'concat-sequence' fusion gives L_v=32 .*max_length=32"):
        VideoLM(config)
    config.max_length = 48
    assert VideoLM(config).num_visual_tokens == 32


def test_tokens_per_frame_must_be_a_square_number():
    config = VideoLMConfig.tiny()
    config.tokens_per_frame = 8
    with pytest.raises(ValueError, match="tokens_per_frame=8 must be a positive square number"):
        VideoLM(config)


def test_bfloat16_lora_adapters_reload_in_bfloat16(tmp_path):
    config = VideoLMConfig.tiny()
    config.llm.dtype = "bfloat16"
    model = VideoLM(config)
    model.set_trainable("lora")
    assert {p.dtype for n, p in model.llm.named_parameters() if "lora_" in n} == {torch.bfloat16}
    model.save_pretrained(tmp_path / "ckpt")
    loaded = VideoLM.from_pretrained(tmp_path / "ckpt")
    assert {p.dtype for n, p in loaded.llm.named_parameters() if "lora_" in n} == {torch.bfloat16}


def test_from_pretrained_loads_the_llm_with_the_configs_settings(model, tmp_path, monkeypatch):
    import json

    import merv.models.llm as llm_module

    model.save_pretrained(tmp_path / "ckpt")
    meta_path = tmp_path / "ckpt/config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["llm"]["trust_remote_code"] = True
    meta_path.write_text(json.dumps(meta))
    seen = {}
    real = llm_module.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(llm_module.AutoModelForCausalLM, "from_pretrained", spy)
    VideoLM.from_pretrained(tmp_path / "ckpt")
    assert seen["trust_remote_code"] is True
    # The flash-attn availability check of a fresh build applies too (flash-attn is not a test dependency).
    meta["config"]["llm"]["attn_implementation"] = "flash_attention_2"
    meta_path.write_text(json.dumps(meta))
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"merv\[flash\]"):
            VideoLM.from_pretrained(tmp_path / "ckpt")
