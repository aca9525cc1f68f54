"""Messages that name the path and the cause (issue 21 §5), in-process: a run directory that is a
dangling or looping symlink, `lab up --rate 0`, lab_levels.py on a folder without runs (Figure 3
over runs of different N: tests/integration/test_messages.py, it trains two runs). Each: one line, a non-zero exit, nothing built or written."""
import importlib.util
import os

from conftest import ROOT

TINY = ["--preset", "smoke", "--backend", "packed", "--train-subset", "64", "--test-subset", "32",
        "--batch-size", "8", "--epochs", "1", "--eval-every", "0", "--progress", "false"]


def train(capsys, *args) -> tuple[int, list[str]]:
    from prsgd.train import main
    code = main([*TINY, "--workers", "2", *map(str, args)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_run_directory_that_is_a_dangling_symlink_is_named_as_such(tmp_path, capsys):
    (tmp_path / "x").symlink_to(tmp_path / "nowhere")
    code, err = train(capsys, "--out", tmp_path, "--run-id", "x")
    assert code == 2 and err == [f"prsgd.train: error: --out/--run-id: {tmp_path}/x is a "
                                 f"dangling symlink (to {tmp_path}/nowhere, which does not "
                                 "exist)"], err
    assert not (tmp_path / "nowhere").exists()


def test_a_run_directory_that_is_a_symlink_loop_is_named_as_such(tmp_path, capsys):
    (tmp_path / "loop").symlink_to("loop")
    code, err = train(capsys, "--out", tmp_path, "--run-id", "loop")
    assert code == 2 and err == [f"prsgd.train: error: --out/--run-id: {tmp_path}/loop is a "
                                 f"symlink loop ({tmp_path}/loop -> loop -> ...)"], err


def test_a_packed_sweeps_run_directory_that_dangles(tmp_path, capsys):
    (tmp_path / "s-I4").symlink_to(tmp_path / "gone")
    code, err = train(capsys, "--out", tmp_path, "--run-id", "s", "--intervals", "1,4")
    assert code == 2 and err[-1].endswith(f"{tmp_path}/s-I4 is a dangling symlink (to "
                                          f"{tmp_path}/gone, which does not exist)"), err


def test_lab_up_with_rate_zero_is_refused_before_anything_is_built(capsys):
    from prsgd.lab import cli
    for rate, why in (("0", "'0' is no rate at all; say --rate none for unshaped links"),
                      ("0mbit", "'0mbit' is no rate at all"),
                      ("fast", "'fast' is not a tc rate")):
        assert cli.main(["up", "--name", "zz-never", "--rate", rate]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"prsgd.lab: error: --rate: {why}"), err
        assert not (cli.state_root() / "zz-never").exists()


def test_lab_levels_on_a_folder_without_runs(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("lab_levels", ROOT / "scripts" / "lab_levels.py")
    lab_levels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab_levels)
    assert lab_levels.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lab_levels: error: no runs with metrics under {tmp_path}"], err
    assert os.listdir(tmp_path) == []
