"""The captured step, the packed-sweep CLI, bad input, and the benchmark's code paths.

CUDA-graph tests skip without a GPU (CI has none); they ran on an H100 (see README)."""
from __future__ import annotations

import json


from conftest import run_python, run_bench


TINY = ["-m", "prsgd.train", "--preset", "smoke", "--train-subset", "64", "--test-subset", "16",
        "--batch-size", "8", "--max-steps", "3", "--progress", "false"]


def test_cli_packed_sweep_writes_one_run_dir_per_interval(tmp_path):
    proc = run_python([*TINY, "--backend", "packed", "--workers", "2", "--intervals", "1,2",
                       "--out", str(tmp_path), "--run-id", "sw"], timeout=300)
    assert "sw-I1" in proc.stdout and "sw-I2" in proc.stdout
    rounds = {}
    for interval in (1, 2):
        d = tmp_path / f"sw-I{interval}"
        meta = json.loads((d / "config.json").read_text())
        assert meta["config"]["interval"] == interval and meta["config"]["intervals"] == []
        rows = (d / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        rounds[interval] = int(rows[-1].split(",")[header.index("rounds")])
    assert rounds == {1: 3, 2: 1}   # 3 steps: every step vs after step 2


def test_bench_runs_on_cpu_and_writes_json(tmp_path):
    report = run_bench("cpu", steps=1, warmup=1, out=str(tmp_path), batch=2)
    names = [r["variant"] for r in report["rows"]]
    assert names == ["plain", "eager", "packed8-eager", "packed40-eager+avg"]
    saved = json.loads(open(report["path"]).read())
    assert saved["rows"][0]["ratio_to_plain"] == 1.0
    assert all(r["images_per_s"] > 0 and r["ms_per_step"] > 0 for r in saved["rows"])
    assert saved["rows"][-1]["replicas"] == 40
