"""Every shipped YAML parses through the CLI; the FSDP policy wraps the intended units."""

from pathlib import Path

import pytest
import yaml

from merv.cli import main
from merv.lit.strategies import merv_fsdp_policy
from merv.models import VideoLM, VideoLMConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUICKSTART = str(CONFIGS / "experiments/quickstart.yaml")
GPU = str(CONFIGS / "trainer/gpu.yaml")


def cli_args(path: Path) -> list[str]:
    """How a config is used: experiments alone, partials on top of the quick start."""
    group = path.parent.name
    if group == "experiments":
        return ["--config", str(path)]
    if group == "model":
        return ["--config", QUICKSTART, "--model.vidlm", str(path)]
    if group == "trainer" and path.name != "gpu.yaml" and path.name != "cpu.yaml":
        return ["--config", QUICKSTART, "--trainer", GPU, "--trainer", str(path)]  # strategies layer over gpu
    return ["--config", QUICKSTART, f"--{group}", str(path)]


def print_config(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_parses(path, capsys):
    config = print_config(cli_args(path), capsys)
    assert config["model"]["vidlm"]["encoders"], "a resolved config always names its encoders"
    own = yaml.safe_load(path.read_text())
    if path.parent.name == "trainer":
        for key, value in own.items():
            if not isinstance(value, (dict, list)):
                assert config["trainer"][key] == value, key


def test_later_configs_and_flags_override_earlier_ones(capsys):
    config = print_config(
        ["--config", QUICKSTART, "--trainer", GPU, "--trainer.max_steps", "7", "--model.vidlm.fusion", "sum"], capsys
    )
    assert config["trainer"]["accelerator"] == "gpu"
    assert config["trainer"]["max_steps"] == 7
    assert config["model"]["vidlm"]["fusion"] == "sum"


def test_a_model_config_names_its_architecture_and_overrides_single_fields(tmp_path, capsys):
    from merv.models.registry import model_config

    shipped = print_config(["--config", str(CONFIGS / "experiments/merv_stage1_align.yaml")], capsys)
    assert VideoLMConfig(**shipped["model"]["vidlm"]) == model_config("merv-full")
    overlay = tmp_path / "model.yaml"
    overlay.write_text("from_name: merv-full\nllm: {attn_implementation: eager}\n")
    config = print_config(
        ["--config", QUICKSTART, "--model.vidlm", str(overlay), "--model.vidlm.tokens_per_frame", "16"], capsys
    )
    expected = model_config("merv-full", llm={"attn_implementation": "eager"}, tokens_per_frame=16)
    assert VideoLMConfig(**config["model"]["vidlm"]) == expected


def test_cli_offers_only_the_subcommands_the_module_supports(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code in (0, None)
    usage = capsys.readouterr().out
    assert all(name in usage for name in ("fit", "validate", "test")) and "predict" not in usage
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", QUICKSTART])
    assert exit_info.value.code not in (0, None)


def test_fsdp_config_builds_a_strategy_with_the_merv_policy(capsys):
    from lightning.pytorch.strategies import FSDPStrategy

    config = print_config(cli_args(CONFIGS / "trainer/fsdp.yaml"), capsys)
    strategy = config["trainer"]["strategy"]
    assert strategy["class_path"].endswith("FSDPStrategy")
    init = dict(strategy["init_args"])
    assert init["auto_wrap_policy"] == "merv.lit.strategies.merv_fsdp_policy"
    init["auto_wrap_policy"] = merv_fsdp_policy
    built = FSDPStrategy(**{k: v for k, v in init.items() if v is not None}, **strategy["dict_kwargs"])
    assert built.kwargs["use_orig_params"] is True
    assert built.sharding_strategy.name == "FULL_SHARD"


def test_deepspeed_configs_name_valid_strategy_arguments(capsys):
    for stage in (2, 3):
        config = print_config(cli_args(CONFIGS / f"trainer/deepspeed_stage_{stage}.yaml"), capsys)
        strategy = config["trainer"]["strategy"]
        assert strategy["class_path"].endswith("DeepSpeedStrategy")
        assert strategy["init_args"]["stage"] == stage
        assert strategy["init_args"]["exclude_frozen_parameters"] is True


def test_fsdp_policy_wraps_decoder_layers_encoder_blocks_projectors_and_fusion():
    model = VideoLM(VideoLMConfig.tiny())
    wrapped = [name for name, m in model.named_modules() if merv_fsdp_policy(m, recurse=False, nonwrapped_numel=0)]
    llm_layers = [n for n in wrapped if n.startswith("llm.")]
    encoder_blocks = [n for n in wrapped if n.startswith("encoders.") and n.count(".") > 1]
    assert len(llm_layers) == model.llm.config.num_hidden_layers
    assert {n.split(".")[1] for n in encoder_blocks} == {"0", "1"} and len(encoder_blocks) == 4
    assert {"projectors.0", "projectors.1", "fusion"} <= set(wrapped)
    assert {"encoders.0", "encoders.1"} <= set(wrapped)
    assert merv_fsdp_policy(model, recurse=True, nonwrapped_numel=0)


@pytest.fixture
def process_group(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'store'}")
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("stage", ["align", "lora", "finetune"])
def test_fsdp_wraps_and_trains_a_bfloat16_llm_beside_float32_encoders(process_group, stage):
    """FSDP flattens one dtype per unit: the encoders (fp32) and the LLM's embeddings (bf16) must not share one."""
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel

    config = VideoLMConfig.tiny()
    config.llm.dtype = "bfloat16"
    model = VideoLM(config)
    if stage == "lora":
        model.add_lora()
    model.set_trainable(stage)
    wrapped = FullyShardedDataParallel(
        model, auto_wrap_policy=merv_fsdp_policy, use_orig_params=True, device_id=torch.device("cpu")
    )
    frames = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8)
    conversation = [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "a ball rolls"}]
    batch = model.processor([{"video": frames, "conversations": conversation}])
    loss = wrapped(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None for p in wrapped.parameters() if p.requires_grad)
