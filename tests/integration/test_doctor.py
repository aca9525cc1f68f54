"""`python -m prsgd.doctor`: the allreduce-path decision, and the real 2-rank check it launches."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, subprocess_env


@pytest.mark.horovod
def test_doctor_runs_the_real_two_rank_check(tmp_path):
    out = tmp_path / "doctor.json"
    p = subprocess.run([sys.executable, "-m", "prsgd.doctor", "--json", str(out)],
                       env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    for line in ("torch ", "GPUs ", "horovod ", "CUDA allreduce", "check gloo       ok: 2 rank(s)"):
        assert line in p.stdout, (line, p.stdout)
    rep = json.loads(out.read_text())
    gloo = rep["checks"]["gloo"]
    assert gloo["ok"] and [r["rank"] for r in gloo["ranks"]] == [0, 1]
    assert all(r["controller"] == "gloo" for r in gloo["ranks"])
    checks = gloo["ranks"][0]["checks"]
    assert {c["numel"] for c in checks} == {1, 1000, 1 << 20} and all(c["err"] == 0 for c in checks)
    if rep["facts"]["horovod"].get("mpi"):
        assert rep["checks"]["mpirun"]["ok"] and rep["checks"]["mpirun"]["ranks"][0]["controller"] == "mpi"
    assert rep["facts"]["cuda_tensor_path"] in ("nccl", "cpu-staging-gloo")
