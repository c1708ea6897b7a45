"""The `merv` command: dispatch to every subcommand, help texts, snake_case flags, export and chat end to end."""

import importlib
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

import merv.cli
from merv import load_vid
from merv.cli import COMMANDS, main, rename_flags
from merv.data.synthetic import generate
from merv.models import VideoLM, VideoLMConfig

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs/experiments/quickstart.yaml")
sys.path.insert(0, str(ROOT / "tests"))

OPTION = re.compile(r"(?<![\w-])--[A-Za-z][\w.-]*")
"""An option as help texts print it; the name runs to the first character that cannot be part of it."""


def exit_code(argv: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def help_text(argv: list[str], capsys) -> str:
    assert exit_code([*argv, "--help"]) in (0, None)
    return capsys.readouterr().out


# ---- the console script and its overview --------------------------------------------------------------------


def test_console_script_is_the_dispatcher():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["merv"].split(":")
    assert getattr(importlib.import_module(module), function) is main


def test_help_lists_every_command_with_its_summary(capsys):
    out = help_text([], capsys)
    assert out.startswith("usage: merv")
    for name, command in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(command.summary[:40])}", out, flags=re.M), name
    assert "predict" not in out  # the module has no predict step


def test_no_command_shows_the_overview_and_fails(capsys):
    assert exit_code([]) == 2
    assert "<command>" in capsys.readouterr().err


def test_an_unknown_command_fails_naming_it_and_the_choices(capsys):
    assert exit_code(["trian", "--config", QUICKSTART]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and ", ".join(COMMANDS) in err


def test_python_dash_m_is_the_same_command():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "merv.cli", "--help"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and all(name in ok.stdout for name in COMMANDS)
    bad = subprocess.run([sys.executable, "-m", "merv.cli", "nope"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr


# ---- dispatch -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["fit", "--config", "a.yaml"], ["validate"], ["test", "--ckpt_path", "x"], ["--config", "a.yaml", "fit"]]
)
def test_training_subcommands_and_leading_options_reach_the_lightning_cli_whole(argv, monkeypatch):
    import merv.cli.train

    seen = []
    monkeypatch.setattr(merv.cli.train, "main", lambda args: seen.append(args))
    assert main(argv) == 0
    assert seen == [argv]


@pytest.mark.parametrize(("command", "rest"), [("eval", ["mcq", "--model", "m"]), ("cache", ["build", "--out", "f"])])
def test_eval_and_cache_get_the_arguments_after_their_name(command, rest, monkeypatch):
    seen = []
    stand_in = types.ModuleType(COMMANDS[command].module)
    stand_in.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, COMMANDS[command].module, stand_in)
    assert main([command, *rest]) == 3  # their exit status is the command's
    assert seen == [rest]


@pytest.mark.parametrize("command", ["export", "chat"])
def test_export_and_chat_get_the_arguments_after_their_name(command, monkeypatch):
    module = importlib.import_module(COMMANDS[command].module)
    seen = []
    monkeypatch.setattr(module, "main", lambda argv: seen.append(argv) or 0)
    assert main([command, "--model", "m"]) == 0
    assert seen == [["--model", "m"]]


def test_fit_resolves_a_config_through_the_dispatcher(capsys):
    assert exit_code(["fit", "--config", QUICKSTART, "--trainer.max_steps", "7", "--print_config"]) in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["max_steps"] == 7 and config["model"]["vidlm"]["encoders"]


# ---- help texts and flag style ------------------------------------------------------------------------------


def command_lines() -> list[list[str]]:
    """Every command line of the `merv` command that has its own options."""
    lines = [["fit"], ["validate"], ["test"], ["export"], ["chat"], ["cache", "build"]]
    lines += [["eval", sub] for sub in ("mcq", "openended", "judge", "action", "table", "merge")]
    return lines


def require_module(argv: list[str]) -> None:
    """Skip a command whose module is not part of this checkout."""
    pytest.importorskip(COMMANDS[argv[0]].module)


@pytest.mark.parametrize("argv", command_lines(), ids=" ".join)
def test_every_command_explains_its_options(argv, capsys):
    require_module(argv)
    out = help_text(argv, capsys)
    usage = out.split("\n\n")[0]
    assert usage.startswith("usage: ") and argv[-1] in usage, usage
    assert len(OPTION.findall(out)) >= 2, out


@pytest.mark.parametrize("argv", command_lines(), ids=" ".join)
def test_every_flag_is_snake_case(argv, capsys):
    require_module(argv)
    options = set(OPTION.findall(help_text(argv, capsys)))
    assert options
    assert not [o for o in options if "-" in o[2:]], sorted(options)


def test_export_and_chat_explain_every_option_with_its_field_docstring(capsys):
    from dataclasses import fields

    from docstring_parser import parse

    from merv.cli.chat import ChatConfig
    from merv.cli.export import ExportConfig

    for name, config in (("export", ExportConfig), ("chat", ChatConfig)):
        out = " ".join(help_text([name], capsys).split())
        documented = {p.arg_name: " ".join(p.description.split()) for p in parse(config.__doc__).params}
        for field in fields(config):
            assert f"--{field.name} " in out
            assert documented[field.name][:40] in out, f"{name} --{field.name}"


# ---- export -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """Two LoRA steps through the CLI (large lr so the adapters move away from zero)."""
    from test_training import fit

    tmp = tmp_path_factory.mktemp("cli_lora_run")
    generate(tmp / "data", num_videos=8, seed=0)
    fit(tmp / "run", tmp / "data", "--trainer.max_steps", "2", "--model.lr", "0.05", stage="lora")
    return tmp / "run/run/version_0"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    data = tmp_path_factory.mktemp("cli_video")
    generate(data, num_videos=5, seed=1)
    return str(next((data / "videos").glob("*.mp4")))


def logits(model: VideoLM, video: str) -> torch.Tensor:
    conversation = [{"from": "human", "value": "<video>\nDescribe."}, {"from": "gpt", "value": "a red circle"}]
    batch = model.prepare_batch([{"video": video, "conversations": conversation}])
    with torch.no_grad():
        return model(**batch).logits


def test_export_writes_the_checkpoint_as_a_saved_model(lora_run, video, tmp_path, capsys):
    ckpt = lora_run / "checkpoints/last.ckpt"
    assert main(["export", "--model", str(ckpt), "--output", str(tmp_path / "plain")]) == 0
    assert f"exported {ckpt} to {tmp_path / 'plain'}" in capsys.readouterr().out
    exported = VideoLM.from_pretrained(tmp_path / "plain")
    assert hasattr(exported.llm, "peft_config")
    torch.testing.assert_close(logits(exported, video), logits(load_vid(ckpt), video), rtol=0, atol=0)


def test_export_merges_lora_from_a_run_dir_given_in_a_config_file(lora_run, video, tmp_path):
    config = tmp_path / "export.yaml"
    config.write_text(yaml.safe_dump({"model": str(lora_run), "output": str(tmp_path / "merged")}))
    assert main(["export", "--config", str(config), "--merge_lora"]) == 0
    merged = VideoLM.from_pretrained(tmp_path / "merged")
    assert not hasattr(merged.llm, "peft_config")
    torch.testing.assert_close(logits(merged, video), logits(load_vid(lora_run), video), rtol=1e-4, atol=1e-4)


def test_merge_lora_is_a_switch_that_also_takes_a_value():
    from merv.cli.export import parse_args

    base = ["--model", "m", "--output", "o"]
    assert parse_args(base).merge_lora is False
    assert parse_args([*base, "--merge_lora"]).merge_lora is True
    assert parse_args([*base, "--merge_lora", "false"]).merge_lora is False


def test_export_requires_a_model_and_an_output(capsys):
    assert exit_code(["export", "--output", "o"]) == 2
    assert "model" in capsys.readouterr().err


# ---- chat ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("cli_tiny") / "model"
    VideoLM(VideoLMConfig.tiny()).save_pretrained(out)
    return out


def test_chat_answers_as_merv_quick_start_does(tiny_model, video, capsys):
    question = "Which way does it move?"
    assert (
        main(["chat", "--model", str(tiny_model), "--video", video, "--question", question, "--max_new_tokens", "5"])
        == 0
    )
    answer = capsys.readouterr().out.strip()
    # MERV's quick-start steps, by hand.
    vidlm = load_vid(tiny_model)
    builder = vidlm.get_prompt_builder()
    builder.add_turn(role="human", message=question)
    expected = vidlm.generate(video, builder.get_prompt(), max_new_tokens=5, do_sample=False)
    assert answer == expected.strip()


def test_chat_clip_bounds_reach_the_model(tiny_model, video, monkeypatch, capsys):
    from merv.cli import chat

    calls = []
    real = VideoLM.generate

    def recording(self, *args, **kwargs):
        calls.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VideoLM, "generate", recording)
    argv = ["--model", str(tiny_model), "--video", video, "--start", "0.1", "--end", "0.5", "--max_new_tokens", "2"]
    assert chat.main([*argv, "--temperature", "0.7", "--top_p", "0.9"]) == 0
    assert calls[0]["start"] == 0.1 and calls[0]["end"] == 0.5
    assert calls[0]["do_sample"] is True and calls[0]["temperature"] == 0.7 and calls[0]["top_p"] == 0.9
    assert chat.main(argv) == 0
    assert calls[1]["do_sample"] is False and calls[1]["temperature"] is None and "top_p" not in calls[1]


@pytest.mark.parametrize(("flag", "value"), [("--temperature", "-1"), ("--max_new_tokens", "0"), ("--top_p", "1.5")])
def test_chat_rejects_impossible_settings_with_a_usage_error(flag, value, capsys):
    assert exit_code(["chat", flag, value]) == 2
    assert flag[2:] in capsys.readouterr().err


# ---- former spellings ---------------------------------------------------------------------------------------


def test_former_flag_spellings_become_the_current_ones():
    renames = {"--checkpoint": "--model", "--merge-lora": "--merge_lora"}
    argv = ["--checkpoint", "run", "--output=o", "--merge-lora", "--checkpoint=ckpt", "--model_path", "x"]
    assert rename_flags(argv, renames) == [
        "--model",
        "run",
        "--output=o",
        "--merge_lora",
        "--model=ckpt",
        "--model_path",
        "x",
    ]


def test_mervcli_is_still_importable_from_the_package():
    from merv.cli.train import MERVCLI

    assert merv.cli.MERVCLI is MERVCLI
