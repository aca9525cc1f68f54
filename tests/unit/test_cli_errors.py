"""Refused flags, in-process through `prsgd.train.main`: exit 2, the flag named on one line, and
no run files. (tests/integration/test_core_units.py keeps one real `python -m prsgd.train`.)"""
from __future__ import annotations

import pytest

from prsgd import train

SMOKE = ["--preset", "smoke", "--backend", "packed", "--workers", "2"]
TINY = ["--preset", "smoke", "--train-subset", "64", "--test-subset", "16", "--batch-size", "8",
        "--max-steps", "3", "--progress", "false"]


def exit_and_stderr(argv, capsys) -> tuple[int, str]:
    try:
        code = train.main(argv)
    except SystemExit as e:          # the parser's own errors (usage + message)
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, flag", [
    (["--interval", "0"], "--interval: must be a positive integer"),
    (["--interval", "-3"], "--interval: must be a positive integer"),
    (["--preset", "nope"], "--preset: must be one of paper, demo, smoke"),
    (["--batch-size", "4096"], "--batch-size: 4096 is larger than a worker's shard"),
    (["--algorithm", "sgd9"], "--algorithm: must be one of prsgd"),
])
def test_bad_input_exits_2_naming_the_flag(tmp_path, capsys, args, flag):
    code, err = exit_and_stderr([*SMOKE, "--out", str(tmp_path), *args], capsys)
    assert code == 2 and err.strip().startswith(f"prsgd.train: error: {flag}"), err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("metrics.csv"))


def test_non_integer_interval_is_rejected_by_the_parser(capsys):
    code, err = exit_and_stderr(["--interval", "2.5"], capsys)
    assert code == 2 and "--interval: expected an integer, got '2.5'" in err


@pytest.mark.parametrize("args, flag", [
    (["--intervals", "1,4"], "--intervals: packs several runs into one process"),
    (["--backend", "packed", "--workers", "2", "--intervals", "0,4"], "--intervals"),
    (["--backend", "packed", "--workers", "2", "--cuda-graph", "--device", "cpu"],
     "--cuda-graph"),
    (["--backend", "packed", "--workers", "2", "--precision", "fp16"],
     "--precision: must be one of fp32, bf16, fp64"),
])
def test_bad_fast_step_flags_exit_2_naming_the_flag(args, flag, tmp_path, capsys):
    code, err = exit_and_stderr([*TINY, "--out", str(tmp_path), *args], capsys)
    assert code == 2 and flag in err, err
    assert not list(tmp_path.rglob("metrics.csv"))
