"""Figure 3 with a clock (prsgd.plots.figure3 / prsgd.plots.clock): modelled panel (b) says so on its face,
contended CPU clocks say so, the time-to-target table, and what the summary's byte and comm
columns hold. Small run directories written here; no training, no timing."""
import json

import pandas as pd
import pytest

from conftest import ROOT, run_python
from prsgd.clock.model import KIND


def write_run(root, rid, interval, losses, *, backend="horovod", world=4, cores=16,
              group_size=0, rounds_local=0):
    d = root / "runs" / rid
    d.mkdir(parents=True)
    meta = {"config": {"run_id": rid, "algorithm": "hier" if group_size else "prsgd",
                       "interval": interval, "seed": 0, "dataset": "synthetic",
                       "backend": backend, "group_size": group_size, "precision": "fp32"},
            "derived": {"workers": world, "averaged_floats": 1000, "steps_per_epoch": 16,
                        "total_steps": 16 * len(losses)},
            "provenance": {"world_size": world, "cpu_count": cores, "devices": ["cpu (2 cores)"]}}
    (d / "config.json").write_text(json.dumps(meta))
    rows = []
    for e, loss in enumerate(losses, 1):
        rounds = 16 * e // interval
        loc = rounds_local * e
        rows.append({"epoch": e, "step": 16 * e, "train_seconds": 10.0 * e, "train_loss": loss,
                     "train_acc": 0.5, "lr": 0.1, "rounds": rounds, "rounds_local": loc,
                     "bytes": (rounds + loc) * 4000, "bytes_local": loc * 4000,
                     "compute_seconds": 9.0 * e, "comm_seconds": 1.0 * e,
                     "comm_seconds_local": 0.0, "test_acc": 0.3})
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)


def calibration(tmp_path, step=0.01):
    doc = {"kind": KIND, "name": "toy box", "compute": {"seconds_per_step": step},
           "network": {"ranks_per_node": 4, "overhead_s": 0.0,
                       "levels": {"intra": {"alpha_s": 0.0, "bandwidth_Bps": 4000.0}}}}
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.fixture
def sweep(tmp_path):
    write_run(tmp_path / "s", "I1", 1, [2.0, 1.0, 0.5])
    write_run(tmp_path / "s", "I4", 4, [2.2, 1.2, 0.8])
    return tmp_path / "s"


def test_plot_figure3_clock_flag(sweep, tmp_path):
    out = tmp_path / "fig"
    run_python([str(ROOT / "scripts" / "plot_figure3.py"), str(sweep), "--out", str(out),
                "--clock", str(calibration(tmp_path))])
    table = pd.read_csv(out / "summary.csv")
    assert list(table["modelled_speedup_vs_I1"]) == pytest.approx([1.0, 3 * 24.16 / (3 * 6.16)])
    assert "MODELLED" in (out / "summary.md").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("[1")
    p = run_python([str(ROOT / "scripts" / "plot_figure3.py"), str(sweep), "--out",
                    str(tmp_path / "x"), "--clock", str(bad)], check=False)
    assert p.returncode == 2 and f"{bad}: not valid JSON" in p.stderr
