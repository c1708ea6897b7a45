"""`merv eval` (merv/cli/eval.py): options parsed from the typed configs, and one run of each subcommand on the
tiny fixtures of the runner and action tests."""

import dataclasses
import json

import pytest
import yaml
from test_action import ScriptedModel, omnifall  # noqa: F401  (omnifall is a fixture)
from test_eval_runner import FakeModel, write_msvd, write_nextqa

from merv.cli.eval import build_parser, main
from merv.eval.action import ActionEvalConfig
from merv.eval.judge import JudgeConfig
from merv.eval.loading import ModelConfig
from merv.eval.runner import EvalConfig


def _options(parser, command):
    sub = parser._subcommands_action._name_parser_map[command]
    return {a.dest for a in sub._actions}


@pytest.mark.parametrize(
    ("command", "configs"),
    [
        ("mcq", [(ModelConfig, ""), (EvalConfig, "")]),
        ("openended", [(ModelConfig, ""), (EvalConfig, ""), (JudgeConfig, "judge.")]),
        ("judge", [(JudgeConfig, "judge.")]),
        ("action", [(ModelConfig, ""), (ActionEvalConfig, "")]),
    ],
)
def test_every_config_field_is_an_option_written_once(command, configs):
    options = _options(build_parser(), command)
    for cls, prefix in configs:
        fields = {prefix + f.name for f in dataclasses.fields(cls)} - {"model_path", "strategy"}
        assert fields <= options, fields - options
    assert "model_path" not in options  # one name for the model: --model


def test_help_comes_from_the_field_docstrings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["openended", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "how many chunks the task is split into" in out and "--judge.kind {openai,local,match}" in out


def test_mcq_in_chunks_then_merge_and_table(tmp_path, monkeypatch, capsys):
    write_nextqa(tmp_path, n=6)
    monkeypatch.setattr("merv.eval.commands.load_model", lambda *a, **kw: FakeModel())
    out = tmp_path / "res"
    common = ["mcq", "--model", "fake", "--task", "NExT-QA", "--question_file", str(tmp_path / "nextqa.csv"),
              "--video_root", str(tmp_path / "videos"), "--output_dir", str(out), "--num_chunks", "2"]  # fmt: skip
    assert main([*common, "--chunk_idx", "0"]) == 0
    assert "chunk finished" in capsys.readouterr().out
    assert main([*common, "--chunk_idx", "1"]) == 0
    line = capsys.readouterr().out
    report = json.loads((out / "nextqa_naive_report.json").read_text())
    assert line.startswith("nextqa [naive]: accuracy") and report["model_path"] == "fake"
    assert main(["merge", "--output_dir", str(out), "--name", "nextqa_naive", "--num_chunks", "2"]) == 0
    assert capsys.readouterr().out == line
    assert main(["merge", "--output_dir", str(out), "--name", "nextqa_naive", "--num_chunks", "3"]) == 1
    assert "chunk 0 of 3 has not run" in capsys.readouterr().err

    assert main(["table", str(out), "--output_file", str(tmp_path / "table.md")]) == 0
    table = capsys.readouterr().out
    rows = table.splitlines()
    assert rows[0].startswith("| report | task |") and len(rows) == 3
    assert f"| nextqa | naive | accuracy {100 * report['accuracy']:.2f}% | 6 | 0 |" in rows[2]
    assert (tmp_path / "table.md").read_text() == table


def test_config_file_then_flags(tmp_path, monkeypatch, capsys):
    write_nextqa(tmp_path, n=4)
    monkeypatch.setattr("merv.eval.commands.load_model", lambda *a, **kw: FakeModel())
    config = tmp_path / "nextqa.yaml"
    config.write_text(yaml.safe_dump({
        "model": "fake", "task": "nextqa", "question_file": str(tmp_path / "nextqa.csv"),
        "video_root": str(tmp_path / "videos"), "output_dir": str(tmp_path / "from-file"), "strategy": "naive",
    }))  # fmt: skip
    assert main(["mcq", "--config", str(config), "--strategy", "loglik"]) == 0
    assert capsys.readouterr().out.startswith("nextqa [loglik]: accuracy")
    assert (tmp_path / "from-file" / "nextqa_loglik_report.json").is_file()


def test_wrong_kind_and_bad_values_are_usage_errors(tmp_path, capsys):
    write_nextqa(tmp_path, n=2)
    base = ["--model", "fake", "--question_file", str(tmp_path / "nextqa.csv")]
    for argv, message in (
        (["openended", "--task", "nextqa", *base], "not a openended task"),
        (["mcq", "--task", "nope", *base], "unknown eval task 'nope'"),
        (["mcq", "--task", "nextqa", *base, "--num_chunks", "2", "--chunk_idx", "2"], "chunk_idx must be in 0..1"),
        (["judge", "--predictions", "p.jsonl", "--output_file", "o.json", "--judge.kind", "openai"], "needs its model"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_openended_with_string_match_then_judge_command(tmp_path, monkeypatch, capsys):
    write_msvd(tmp_path / "msvd")
    monkeypatch.setattr("merv.eval.commands.load_model", lambda *a, **kw: FakeModel())
    out = tmp_path / "res"
    assert main(["openended", "--model", "fake", "--task", "msvd", "--question_file", str(tmp_path / "msvd/test_q.json"),
                 "--answer_file", str(tmp_path / "msvd/test_a.json"), "--video_root", str(tmp_path / "msvd/videos"),
                 "--output_dir", str(out)]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("msvd [generate]: exact match")
    report = json.loads((out / "msvd_report.json").read_text())
    assert (
        main(["judge", "--predictions", str(out / "msvd_pred_merge.jsonl"), "--output_file", str(out / "j.json")]) == 0
    )
    judged = json.loads((out / "j.json").read_text())
    assert judged["string_match"] == report["string_match"] and judged["task"] == "msvd"


def test_action_subcommand_reports_and_draws_the_confusion_matrix(omnifall, tmp_path, monkeypatch, capsys):  # noqa: F811
    model = ScriptedModel(nll={"fall": 0.1})
    monkeypatch.setattr("merv.eval.commands.load_model", lambda *a, **kw: model)
    argv = ["action", "--model", "fake", "--labels", str(omnifall), "--mode", "loglik",
            "--classes", "[walk, fall, fallen]", "--output_dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("loglik: 5 clips") and (tmp_path / "loglik_confusion.png").is_file()
    report = json.loads((tmp_path / "loglik_report.json").read_text())
    assert report["classes"] == ["walk", "fall", "fallen"] and report["model_path"] == "fake"
    assert len(model.calls) == 5


def test_module_runs_as_a_script(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "merv.cli.eval", "table", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1 and "error: no evaluation reports under" in result.stderr


@pytest.mark.parametrize("flags, expected", [([], False), (["--merge_only"], True), (["--merge_only", "false"], False)])
def test_merge_only_is_a_bare_switch(flags, expected):
    options = build_parser().parse_args(["mcq", "--model", "m", "--task", "nextqa", "--question_file", "q.csv", *flags])
    assert options.mcq.merge_only is expected
