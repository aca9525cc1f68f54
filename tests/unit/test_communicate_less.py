"""The communicate-less figure and tables (prsgd.plots.communicate_less, issue 19 §7): variants
averaged over their seeds, time and bytes to a target loss as measured, and the MODELLED paper-scale
seconds computed by hand. Small run directories written here; no training, no timing."""
import json

import pandas as pd
import pytest

from conftest import ROOT, write_toy_run
from prsgd.clock.model import KIND
from prsgd.plots import communicate_less as cl


def toy_runs(root):
    """PR-SGD I = 1 (seeds 0 and 1) and I = 4 (seed 0): 16 steps and 10 s per epoch, 4,000 bytes
    per round (conftest.write_toy_run)."""
    write_toy_run(root / "fp32", "I1-s0", 1, [2.0, 1.0, 0.6])
    write_toy_run(root / "fp32", "I1-s1", 1, [2.2, 1.2, 0.8])
    write_toy_run(root / "fp32", "I4-s0", 4, [2.1, 1.3, 0.7])
    seed1 = root / "fp32" / "runs" / "I1-s1" / "config.json"
    meta = json.loads(seed1.read_text())
    meta["config"]["seed"] = 1
    seed1.write_text(json.dumps(meta))


def paper_box(tmp_path):
    """8 ranks on one node at 4,000 B/s, 0.01 s per local step, no latency or overhead."""
    doc = {"kind": KIND, "name": "toy 8-rank box", "compute": {"seconds_per_step": 0.01},
           "network": {"ranks_per_node": 8, "overhead_s": 0.0,
                       "levels": {"intra": {"alpha_s": 0.0, "bandwidth_Bps": 4000.0}}}}
    path = tmp_path / "box.json"
    path.write_text(json.dumps(doc))
    return path


def test_variants_are_seed_means_and_the_target_is_plain_i1(tmp_path):
    toy_runs(tmp_path)
    runs = cl.load_runs(tmp_path)
    curves = cl.curves(runs).set_index(["variant", "epoch"])
    i1 = "PR-SGD (Alg 1) I=1"
    assert curves.loc[(i1, 2), "train_loss"] == pytest.approx(1.1)     # (1.0 + 1.2) / 2
    assert curves.loc[(i1, 3), "MB"] == pytest.approx(48 * 4000 / 1e6)
    target, what = cl.default_target(runs)
    assert target == pytest.approx(0.7) and i1 in what
    table = cl.per_run(runs)
    assert list(table.seed) == [0, 1, 0] and set(table.s_per_epoch) == {10.0}


def test_time_and_bytes_to_target_measured_and_modelled_at_paper_scale(tmp_path):
    toy_runs(tmp_path)
    runs = cl.load_runs(tmp_path)
    box = {"box": cl.Calibration.load(paper_box(tmp_path))}
    t = cl.time_to_target(runs, 0.7, box).set_index("variant")
    i1, i4 = t.loc["PR-SGD (Alg 1) I=1"], t.loc["PR-SGD (Alg 1) I=4"]
    assert (i1.epoch, i4.epoch) == (3, 3)          # I = 1's mean is 0.7 at epoch 3, I = 4's 0.7
    assert i1.measured_s == 30.0 and i1.MB_sent == pytest.approx(0.19, abs=0.005)
    # paper scale: 50,000 / (8 x 32) = 195.3125 steps per worker per epoch; I = 1 averages after
    # each (a ring allreduce of 4,000 B over 8 ranks at 4,000 B/s: 2 x 7/8 s), I = 4 after 4.
    steps = 3 * 50_000 / (8 * 32)
    assert i1["modelled_s box"] == pytest.approx(round(steps * (0.01 + 1.75), 1))
    assert i4["modelled_s box"] == pytest.approx(round(steps * 0.01 + steps / 4 * 1.75, 1))
    never = cl.time_to_target(runs, 0.1, box)
    assert never.epoch.isna().all() and never.measured_s.isna().all()


def test_command_line_writes_tables_and_figure(tmp_path):
    toy_runs(tmp_path)
    box = paper_box(tmp_path)
    assert cl.main([str(tmp_path), "--clock", f"box={box}"]) == 0
    for f in ("runs.csv", "runs.md", "time_to_target.csv", "time_to_target.md",
              "communicate_less.png", "communicate_less.pdf"):
        assert (tmp_path / f).stat().st_size > 100, f
    md = (tmp_path / "time_to_target.md").read_text()
    assert "MODELLED" in md and "## Target 0.7000" in md and "every variant reaches it" in md
    assert len(pd.read_csv(tmp_path / "time_to_target.csv")) == 4     # 2 variants x 2 targets
    assert cl.main([str(tmp_path / "nothing"), "--clock", f"box={box}"]) == 2


def test_committed_tables_recompute():
    """results/compress-lab's tables come from its committed runs and the committed presets."""
    root = ROOT / "results" / "compress-lab"
    runs = cl.load_runs(root)
    clocks = {name: cl.Calibration.load(ROOT / path) for name, path in cl.DEFAULT_CLOCKS.items()}
    pd.testing.assert_frame_equal(cl.per_run(runs), pd.read_csv(root / "runs.csv"),
                                  check_dtype=False)
    pd.testing.assert_frame_equal(cl.target_table(runs, clocks),
                                  pd.read_csv(root / "time_to_target.csv"), check_dtype=False)
