"""The cycle-time benchmark runs real `horovodrun -np 2 --gloo` ranks and reports ratios."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT, run_python

BENCH_COMM = str(ROOT / "benchmarks" / "bench_comm.py")


@pytest.mark.horovod
def test_bench_comm_compares_cycle_times_side_by_side(tmp_path):
    proc = run_python([BENCH_COMM, "--np", "2", "--cycle-times", "0.1",
                       "--rounds", "3", "--warmup", "1", "--repeats", "2", "--compute-ms", "1",
                       "--out", str(tmp_path)], timeout=300)
    report = json.loads(next(tmp_path.glob("comm-*.json")).read_text())
    rows = {r["cycle_time_ms"]: r for r in report["rows"]}
    assert set(rows) == {"0.1", "1"}                  # Horovod's default is always the reference
    assert rows["1"]["round_ratio_to_default"] == 1.0
    for r in rows.values():
        assert r["ranks"] == 2 and r["repeats"] == 2 and len(r["all"]["round_ms"]) == 2
        assert r["floats"] == 269_722 + 1_376           # ResNet20 parameters + BN statistics
        assert r["round_ms"] >= r["compute_ms"] >= 1.0   # a round holds its compute
    assert "x dflt" in proc.stdout


def test_bench_comm_refuses_bad_arguments():
    for args, msg in ((["--cycle-times", "-1"], "--cycle-times"), (["--np", "0"], "--np"),
                      (["--rounds", "0"], "--rounds")):
        proc = run_python([BENCH_COMM, *args, "--out", ""], check=False)
        assert proc.returncode == 2 and msg in proc.stderr
