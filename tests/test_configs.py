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
    encoder_blocks = [n for n in wrapped if n.startswith("encoders.")]
    assert len(llm_layers) == model.llm.config.num_hidden_layers
    assert {n.split(".")[1] for n in encoder_blocks} == {"0", "1"} and len(encoder_blocks) == 4
    assert {"projectors.0", "projectors.1", "fusion"} <= set(wrapped)
    assert merv_fsdp_policy(model, recurse=True, nonwrapped_numel=0)
