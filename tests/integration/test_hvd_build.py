"""The Horovod build decisions (src/prsgd/install/hvd_build.py): no GPU, no compiler needed."""
from __future__ import annotations

import subprocess
import sys


from conftest import ROOT, subprocess_env


def test_cli_plan_prints_shell_and_refusal_exits_3(tmp_path):
    """The CLI the install script evals, run for real with this interpreter's torch."""
    env = subprocess_env(PRSGD_CACHE=str(tmp_path), HOROVOD_WITHOUT_MPI="1")
    out = subprocess.run([sys.executable, "-m", "prsgd.install.hvd_build", "plan", "abc"], env=env,
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "export HOROVOD_WITH_GLOO='1'" in out.stdout and "HVD_KEY='hvd0.28.1-torch" in out.stdout
    env["HOROVOD_WITH_MPI"] = "1"
    env.pop("HOROVOD_WITHOUT_MPI")
    env["PATH"] = str(tmp_path)          # no mpicxx on PATH
    bad = subprocess.run([sys.executable, "-m", "prsgd.install.hvd_build", "plan"], env=env,
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 3 and "mpicxx" in bad.stderr
