"""Packed sweeps (`--intervals`: several runs in one process) survive interruption, and the sweep
driver's `--pack` mode runs a seed's intervals as one such process.

2 workers x 32-image shards / batch 4 = 8 steps per epoch; I = 3 and 5 do not divide 8, so the
local models differ at every epoch boundary and a checkpoint must keep every replica.
"""
from __future__ import annotations


import pandas as pd

from conftest import ROOT
from prsgd.core import config as config_mod
from prsgd.records.results import load_sweep
from prsgd.core.build import packed_run_id
from prsgd.train import train_packed_sweep

ARGS = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "64", "--test-subset",
        "16", "--batch-size", "4", "--epochs", "3", "--lr-milestones", "2", "--seed", "5",
        "--backend", "packed", "--workers", "2", "--intervals", "3,5", "--checkpoint-every", "1",
        "--progress", "false", "--device", "cpu"]


def sweep(out, *extra, hooks=None):
    cfg = config_mod.from_args([*ARGS, "--out", str(out), *extra])
    return train_packed_sweep(cfg, hooks=hooks)


def test_run_id_template():
    assert packed_run_id("I{interval}-s0", 16) == "I16-s0"
    assert packed_run_id("abc", 4) == "abc-I4"


def test_committed_figure3_replots_from_its_run_directories(tmp_path):
    """results/figure3-h100-packed's tables come from the run directories committed beside them."""
    from prsgd.plots import figure3 as plot
    sweep_dir = ROOT / "results" / "figure3-h100-packed" / "sweep"
    # panel (b) and the modelled columns use the named calibration (results/README.md)
    clock = ROOT / "results" / "wallclock" / "calibration" / "h100-pcie3-box.json"
    written = plot.write_all(sweep_dir, tmp_path, clock=clock)
    fresh = pd.read_csv(written["summary.csv"])
    committed = pd.read_csv(ROOT / "results" / "figure3-h100-packed" / "summary.csv")
    pd.testing.assert_frame_equal(fresh, committed)
    assert list(fresh["interval"]) == [1, 4, 8, 16, 32] and set(fresh["epochs"]) == {300}
    # One packed process: one shared clock, so no measured time ratio between intervals is
    # claimed; the packed runs communicated nothing, so no comm seconds either.
    assert plot.shared_clock(plot.select(load_sweep(sweep_dir)))
    assert fresh["speedup_vs_I1"].isna().all() and fresh["comm_seconds"].isna().all()
    assert "share one clock" in written["summary.md"].read_text()
    # the modelled clock: fewer rounds, less time; and it says it is modelled
    assert fresh["modelled_seconds"].is_monotonic_decreasing
    assert "MODELLED" in written["summary.md"].read_text()


def test_pack_jobs_and_outcomes():
    from prsgd.experiments import sweep
    spec = sweep.SweepSpec(intervals=[1, 4], seeds=[0, 1], backend="packed", pack=True, np=8)
    todo = [r for r in spec.run_ids() if r[0] != "I1-s1"]    # I1-s1 finished earlier
    assert sweep.jobs(spec, todo) == [[("I1-s0", 1, 0), ("I4-s0", 4, 0)], [("I4-s1", 4, 1)]]
    cmd = sweep.job_command(spec, ROOT / "runs", sweep.jobs(spec, todo)[0], resume=True)
    assert cmd[cmd.index("--run-id") + 1] == "I{interval}-s0"
    assert cmd[cmd.index("--intervals") + 1] == "1,4" and "--resume" in cmd
    # A pack of one remaining interval is still a pack (its checkpoint knows it as one).
    cmd = sweep.job_command(spec, ROOT / "runs", sweep.jobs(spec, todo)[1], resume=False)
    assert cmd[cmd.index("--intervals") + 1] == "4" and "--interval" not in cmd
    spec.pack = False
    assert len(sweep.jobs(spec, todo)) == 3

