"""load_vid on every kind of source, the model registry, export with LoRA merge, MERV's quick start."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from merv import available_models, load_vid
from merv.data.synthetic import generate
from merv.models import VideoLM, VideoLMConfig
from merv.models.loading import ModelNotFoundError
from merv.models.registry import expand_registered, model_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """A short LoRA run through the CLI (large lr so the adapters move away from zero)."""
    from test_training import fit

    tmp = tmp_path_factory.mktemp("lora_run")
    data = tmp / "data"
    generate(data, num_videos=8, seed=0)
    fit(tmp / "run", data, "--trainer.max_steps", "3", "--model.lr", "0.05", stage="lora")
    return tmp / "run/run/version_0"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    data = tmp_path_factory.mktemp("video")
    generate(data, num_videos=5, seed=1)
    return str(next((data / "videos").glob("*.mp4")))


def ask(model, video) -> str:
    builder = model.get_prompt_builder()
    builder.add_turn("human", "Describe the video.")
    return model.generate(video, builder.get_prompt(), max_new_tokens=8)


def test_load_vid_reads_saved_dirs_checkpoints_and_run_dirs_alike(lora_run, video):
    from_dir = load_vid(lora_run / "model")
    from_ckpt = load_vid(lora_run / "checkpoints/last.ckpt")
    from_run = load_vid(lora_run)
    batch = from_dir.prepare_batch(
        [
            {
                "video": video,
                "conversations": [
                    {"from": "human", "value": "<video>\nDescribe."},
                    {"from": "gpt", "value": "a red circle"},
                ],
            }
        ]
    )
    expected = from_dir(**batch).logits
    for model in (from_ckpt, from_run):
        assert not model.training
        torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=0)


def test_export_with_lora_merge_generates_like_the_adapter_model(lora_run, tmp_path, video):
    from export import main as export

    export(["--checkpoint", str(lora_run), "--output", str(tmp_path / "plain")])
    export(["--checkpoint", str(lora_run), "--output", str(tmp_path / "merged"), "--merge-lora"])
    plain, merged = VideoLM.from_pretrained(tmp_path / "plain"), VideoLM.from_pretrained(tmp_path / "merged")
    assert hasattr(plain.llm, "peft_config") and not hasattr(merged.llm, "peft_config")
    assert json.loads((tmp_path / "merged/config.json").read_text())["lora"] is False
    # The adapters changed the model, and merging them keeps exactly that change.
    assert any(p.abs().sum() > 0 for n, p in plain.named_parameters() if "lora_B" in n)
    assert ask(merged, video) == ask(plain, video)


def test_exported_model_loads_without_lightning(lora_run, tmp_path):
    import subprocess

    code = (
        "import sys; sys.modules['lightning'] = None; sys.modules['pytorch_lightning'] = None\n"
        f"from merv import load_vid; m = load_vid({str(lora_run / 'model')!r}); print(type(m).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "VideoLM"


def test_registry_names_resolve_to_merv_configs():
    names = available_models()
    assert {"merv-full", "merv-frozen", "merv-tiny"} <= set(names)
    full = model_config("merv-full")
    assert [e.num_frames for e in full.encoders] == [16, 16, 32, 16]
    assert full.fusion == "cross-attention" and full.llm.prompt_format == "merv"
    singles = [n for n in names if n.endswith("-only")]
    assert len(singles) == 4
    assert sorted(model_config(n).encoders[0].num_frames for n in singles) == [16, 16, 16, 32]
    assert model_config("merv-tiny") == VideoLMConfig.tiny()
    with pytest.raises(KeyError, match="available"):
        model_config("merv-huge")


def shipped_model(name: str) -> VideoLMConfig:
    """A `configs/model/` file as the training command line reads it."""
    return VideoLMConfig(**expand_registered(yaml.safe_load((ROOT / f"configs/model/{name}.yaml").read_text())))


def test_model_yaml_names_the_registered_architecture():
    assert yaml.safe_load((ROOT / "configs/model/merv-full.yaml").read_text()) == {"from_name": "merv-full"}
    assert shipped_model("merv-full") == model_config("merv-full")


def test_a_named_architecture_takes_overrides_field_by_field():
    data = yaml.safe_load("vidlm: {from_name: merv-full, fusion: sum, llm: {attn_implementation: eager}}")
    config = VideoLMConfig(**expand_registered(data)["vidlm"])
    full = model_config("merv-full")
    assert config.fusion == "sum" and config.llm.attn_implementation == "eager"
    # Everything not named keeps the registered value, nested configs included.
    assert config.llm.name_or_path == full.llm.name_or_path and config.encoders == full.encoders
    assert VideoLMConfig.from_name("merv-full", fusion="sum", llm={"attn_implementation": "eager"}) == config
    assert expand_registered({"fusion": "sum", "items": [1, {"a": 2}]}) == {"fusion": "sum", "items": [1, {"a": 2}]}
    with pytest.raises(KeyError, match="available"):
        expand_registered({"from_name": "merv-huge"})


def test_a_registered_name_without_local_weights_explains_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        load_vid("merv-full", cache_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "merv-full") in message
    assert "merv export --model" in message


def test_a_registered_name_loads_from_the_model_cache(lora_run, tmp_path, monkeypatch):
    model = load_vid(lora_run / "model")
    model.save_pretrained(tmp_path / "models/merv-tiny")
    monkeypatch.setenv("MERV_CACHE", str(tmp_path))
    assert isinstance(load_vid("merv-tiny"), VideoLM)


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a saved model directory"):
        load_vid(tmp_path / "nothing-here")


def test_merv_quick_start_snippet_runs_with_the_tiny_trained_model(lora_run, video):
    # MERV's README flow, unchanged apart from the model name.
    vidlm = load_vid(str(lora_run / "model"))
    vidlm.to("cpu", dtype=torch.float32)
    prompt_builder = vidlm.get_prompt_builder()
    prompt_builder.add_turn(role="human", message="What is going on in this video?")
    prompt_text = prompt_builder.get_prompt()
    generated_text = vidlm.generate(
        video, prompt_text, num_frames=[4, 8], do_sample=True, temperature=0.4, max_new_tokens=16
    )
    assert isinstance(generated_text, str)


def test_quick_start_script_answers(lora_run, video, capsys):
    from quick_start import main as quick_start

    text = quick_start(["--model", str(lora_run / "model"), "--video", video, "--max-new-tokens", "6"])
    assert capsys.readouterr().out.strip() == text


def test_tiny_model_yaml_is_the_tiny_config():
    assert shipped_model("tiny") == model_config("merv-tiny") == VideoLMConfig.tiny()


def test_model_config_returns_a_fresh_config_every_time():
    from merv.models import registry

    changed = model_config("merv-full")
    changed.llm.dtype = "float32"
    changed.encoders[0].num_frames = 3
    single = model_config("merv-siglip-only")
    assert single.llm.dtype == "bfloat16" and single.encoders[0].num_frames == 16
    assert model_config("merv-full") == shipped_model("merv-full")
    assert registry.MERV_LLM.dtype == "bfloat16" and registry.MERV_ENCODERS["languagebind"].num_frames == 16


def test_an_explicit_hf_token_wins_for_the_call_only(tmp_path, monkeypatch):
    import os

    from huggingface_hub import get_token

    (tmp_path / "config.json").write_text("{}")
    seen = []

    def fake_from_pretrained(cls, path):
        seen.append(get_token())  # what every Hugging Face loader would use
        return torch.nn.Identity()

    monkeypatch.setattr(VideoLM, "from_pretrained", classmethod(fake_from_pretrained))
    monkeypatch.setenv("HF_TOKEN", "from-env")
    load_vid(tmp_path, hf_token="explicit")
    load_vid(tmp_path)
    assert seen == ["explicit", "from-env"]
    assert os.environ["HF_TOKEN"] == "from-env"
    monkeypatch.delenv("HF_TOKEN")
    load_vid(tmp_path, hf_token="explicit")
    assert "HF_TOKEN" not in os.environ


def test_last_checkpoint_is_a_file_and_a_sharded_one_must_be_consolidated(tmp_path):
    import os

    from merv.lit.checkpoints import find_last_checkpoint

    ckpts = tmp_path / "run/checkpoints"
    ckpts.mkdir(parents=True)
    older = ckpts / "epoch=0-step=2.ckpt"
    older.write_bytes(b"")
    os.utime(older, (0, 0))
    assert find_last_checkpoint(tmp_path) == older
    sharded = ckpts / "last.ckpt"  # FSDP writes a directory of shards under the checkpoint's name
    sharded.mkdir()
    (sharded / "meta.pt").write_bytes(b"")
    for source in (tmp_path, sharded):
        with pytest.raises(ValueError, match="lightning.pytorch.utilities.consolidate_checkpoint"):
            find_last_checkpoint(source)
    consolidated = ckpts / "last.ckpt.consolidated"
    consolidated.write_bytes(b"")
    assert find_last_checkpoint(tmp_path) == consolidated
    assert find_last_checkpoint(sharded) == consolidated


def test_source_kind_tells_every_kind_of_model_argument_apart(tmp_path):
    from merv.models.sources import source_kind

    saved = tmp_path / "model"
    saved.mkdir()
    (saved / "config.json").write_text("{}")
    run = tmp_path / "run/version_0"
    (run / "checkpoints/last.ckpt").mkdir(parents=True)  # a sharded checkpoint is a folder named *.ckpt
    (run / "checkpoints/step.ckpt").write_bytes(b"")
    (run / "checkpoints/last.ckpt.consolidated").write_bytes(b"")
    assert source_kind(saved) == "saved"
    assert source_kind(run) == "run"
    assert source_kind(run / "checkpoints/step.ckpt") == "checkpoint"
    assert source_kind(run / "checkpoints/last.ckpt") == "checkpoint"
    assert source_kind(run / "checkpoints/last.ckpt.consolidated") == "checkpoint"
    assert source_kind("merv-tiny") == "registered"
    with pytest.raises(FileNotFoundError, match="neither a saved model directory"):
        source_kind(tmp_path / "nothing-here")


def test_the_model_layer_reads_training_checkpoints_only_through_the_installed_reader(lora_run, monkeypatch):
    from merv.models import sources
    from merv.models.loading import load_vid as models_load_vid

    monkeypatch.setattr(sources, "_checkpoint_reader", None)
    for source in (lora_run, lora_run / "checkpoints/last.ckpt"):
        with pytest.raises(ValueError, match="no checkpoint reader is installed"):
            models_load_vid(source)
    read = []
    sources.set_checkpoint_reader(lambda path: read.append(path) or (VideoLMConfig.tiny(), {}))
    with pytest.raises(RuntimeError, match="does not match the model"):  # an empty state dict lacks trained weights
        models_load_vid(lora_run)
    assert read == [lora_run]
