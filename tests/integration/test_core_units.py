"""Unit tests without processes: model, data path, sharding, config (issue 2)."""
import subprocess

import pytest

from conftest import run_python


@pytest.mark.parametrize("args, flag", [
    (["--interval", "0"], "--interval"),
    (["--interval", "-3"], "--interval"),
    (["--preset", "nope"], "--preset"),
    (["--batch-size", "4096"], "--batch-size"),
    (["--algorithm", "sgd9"], "--algorithm"),
])
def test_bad_input_exits_nonzero_naming_the_flag(tmp_path, args, flag):
    proc = run_python(["-m", "prsgd.train", "--preset", "smoke", "--backend", "packed",
                       "--workers", "2", "--out", str(tmp_path), *args], check=False,
                      timeout=120)
    assert proc.returncode != 0
    assert flag in proc.stderr, proc.stderr
    assert not list(tmp_path.rglob("metrics.csv"))


def test_non_integer_interval_is_rejected_by_the_parser():
    proc = run_python(["-m", "prsgd.train", "--interval", "2.5"], check=False)
    assert proc.returncode == 2 and "--interval" in proc.stderr


def test_horovod_build_has_pytorch_and_gloo():
    import shutil
    from conftest import subprocess_env
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    out = subprocess.run([exe, "--check-build"], capture_output=True, text=True, timeout=120,
                         env=subprocess_env()).stdout
    assert "[X] PyTorch" in out and "[X] Gloo" in out, out
