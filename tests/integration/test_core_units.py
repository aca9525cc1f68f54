"""Unit tests without processes: model, data path, sharding, config (issue 2)."""
import subprocess


from conftest import run_python


def test_the_cli_exits_2_with_one_line_naming_the_flag():
    """The one end-to-end check of a refused flag through a real `python -m prsgd.train`
    (every other refusal is checked in-process: tests/unit/test_cli_errors.py)."""
    proc = run_python(["-m", "prsgd.train", "--preset", "smoke", "--backend", "packed",
                       "--workers", "2", "--interval", "0"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "prsgd.train: error: --interval: must be a positive integer " \
                                  "(got 0)"


def test_horovod_build_has_pytorch_and_gloo():
    import shutil
    from conftest import subprocess_env
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    out = subprocess.run([exe, "--check-build"], capture_output=True, text=True, timeout=120,
                         env=subprocess_env()).stdout
    assert "[X] PyTorch" in out and "[X] Gloo" in out, out
