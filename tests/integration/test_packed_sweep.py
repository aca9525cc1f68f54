"""Packed sweeps (`--intervals`: several runs in one process) survive interruption, and the sweep
driver's `--pack` mode runs a seed's intervals as one such process.

2 workers x 32-image shards / batch 4 = 8 steps per epoch; I = 3 and 5 do not divide 8, so the
local models differ at every epoch boundary and a checkpoint must keep every replica.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import ROOT, StopAt, load_ckpt, metric_frame, run_python
from prsgd.core import config as config_mod
from prsgd.records.lifecycle import Interrupted
from prsgd.records.results import load_sweep
from unit.test_packed_sweep import ARGS, sweep   # the same runs in both tiers


def final_state(run_dir):
    ck = load_ckpt(run_dir)
    return ck, ck["ranks"][0]["flat"]


def test_interrupted_packed_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    whole = sweep(tmp_path / "whole", "--run-id", "I{interval}-s5")
    assert [d.name for d in whole] == ["I3-s5", "I5-s5"]

    with pytest.raises(Interrupted):    # stopped in epoch 2, after the checkpoint of epoch 1
        sweep(tmp_path / "cut", "--run-id", "I{interval}-s5", hooks=StopAt(11))
    cut = [tmp_path / "cut" / d.name for d in whole]
    for d in cut:
        status = json.loads((d / "status.json").read_text())
        assert status["status"] == "interrupted" and status["checkpoint_epoch"] == 1
        assert len(pd.read_csv(d / "metrics.csv")) == 1
    assert not (cut[1] / "checkpoint.pt").exists()   # one checkpoint, in the first run's dir

    # Without --resume the directories are refused; with it the sweep finishes.
    with pytest.raises(config_mod.ConfigError, match="already holds a run"):
        sweep(tmp_path / "cut", "--run-id", "I{interval}-s5")
    with pytest.raises(config_mod.ConfigError, match="--intervals"):
        sweep(tmp_path / "cut", "--run-id", "I{interval}-s5", "--resume", "--intervals", "3,4")
    sweep(tmp_path / "cut", "--run-id", "I{interval}-s5", "--resume")

    ck_whole, flat_whole = final_state(whole[0])
    ck_cut, flat_cut = final_state(cut[0])
    assert torch.equal(flat_whole, flat_cut)      # every replica of both runs, bit for bit
    assert [c["rounds"] for c in ck_cut["ranks"][0]["config_counters"]] == \
        [c["rounds"] for c in ck_whole["ranks"][0]["config_counters"]]
    for a, b in zip(whole, cut):
        pd.testing.assert_frame_equal(metric_frame(a), metric_frame(b))
        assert json.loads((b / "status.json").read_text())["status"] == "done"
        meta = json.loads((b / "config.json").read_text())
        assert meta["resumes"][0]["from_epoch"] == 1
    # The runs differ (I = 3 vs 5): the per-run rows and counters are not one run's copied twice.
    assert metric_frame(cut[0])["rounds"].iloc[-1] == 24 // 3 and metric_frame(cut[1])["rounds"].iloc[-1] == 24 // 5


def test_sweep_driver_packs_a_seeds_intervals_into_one_process(tmp_path):
    out = tmp_path / "sw"
    train = ["--preset", "smoke", "--train-subset", "64", "--test-subset", "16", "--batch-size",
             "4", "--epochs", "2", "--checkpoint-every", "1", "--device", "cpu"]
    cmd = [str(ROOT / "scripts" / "sweep.py"), "--out", str(out), "--data", "synthetic",
           "--backend", "packed", "--pack", "--np", "2", "--intervals", "2,3", "--seeds", "0",
           "--", *train]
    proc = run_python(cmd, timeout=600)
    manifest = {r["run_id"]: r for r in json.loads((out / "manifest.json").read_text())["runs"]}
    assert {k: (r["status"], r["pack"]) for k, r in manifest.items()} == \
        {"I2-s0": ("done", [2, 3]), "I3-s0": ("done", [2, 3])}
    assert manifest["I2-s0"]["command"] == manifest["I3-s0"]["command"]
    assert "--intervals 2,3" in manifest["I2-s0"]["command"]
    assert "epoch 2/2" in proc.stdout
    df = load_sweep(out)
    assert sorted(df["interval"].unique()) == [2, 3] and set(df["status"]) == {"done"}
    assert df.groupby("interval")["rounds"].max().to_dict() == {2: 16 // 2, 3: 16 // 3}
    # A rerun finds nothing to do.
    again = run_python(cmd, timeout=300)
    assert "2 finished run(s) skipped" in again.stdout


@pytest.mark.parametrize("opts, message", [
    (["--pack"], "--pack: packs runs into one process"),
    (["--backend", "packed", "--pack", "--override", "I1-s0=--lr 0.05"], "--override: not with"),
    (["--backend", "packed", "--intervals", "4,4"], "--intervals: each interval once"),
])
def test_bad_pack_arguments_are_refused(tmp_path, opts, message):
    proc = run_python([str(ROOT / "scripts" / "sweep.py"), "--out", str(tmp_path / "s"),
                       "--data", "synthetic", "--intervals", "1,4", *opts, "--no-preflight"],
                      check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "s").exists()


def test_diverged_packed_sweep_names_its_runs(tmp_path, capsys):
    from prsgd import train
    rc = train.main([*ARGS, "--lr", "1e30", "--out", str(tmp_path), "--run-id", "nan"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "in epoch 1 of run(s) nan-I3, nan-I5: first non-finite loss at step" in err
    assert "(worker 0 of nan-I3)" in err or "(worker 1 of nan-I3)" in err
    for d in ("nan-I3", "nan-I5"):
        assert json.loads((tmp_path / d / "status.json").read_text())["status"] == "diverged"


def test_resume_cuts_diagnostics_back_to_the_checkpoint(tmp_path):
    """diagnostics.csv is appended per epoch before the checkpoint: a kill in between must not
    leave the lost epoch's row (or a torn one) in front of the resumed run's rows."""
    from prsgd.train import run
    args = [*ARGS[:ARGS.index("--intervals")], "--interval", "3", "--checkpoint-every", "1",
            "--diagnostics", "--out"]
    cfg = lambda out, *extra: config_mod.from_args([*args, str(out), "--run-id", "d", *extra])
    run(cfg(tmp_path / "whole"))
    with pytest.raises(Interrupted):
        run(cfg(tmp_path / "cut"), hooks=StopAt(20))          # in epoch 3, after epoch 2's save
    diag = tmp_path / "cut" / "d" / "diagnostics.csv"
    whole = (tmp_path / "whole" / "d" / "diagnostics.csv").read_text().splitlines()
    with open(diag, "a") as f:                          # as a kill after the epoch-3 row leaves it
        f.write(whole[3] + "\n" + whole[3][:9])
    run(cfg(tmp_path / "cut", "--resume"))
    strip = lambda p: pd.read_csv(p).drop(columns=["diag_seconds"])
    pd.testing.assert_frame_equal(strip(diag), strip(tmp_path / "whole" / "d" / "diagnostics.csv"))
    assert list(pd.read_csv(diag)["epoch"]) == [1, 2, 3]


def as_if_killed(cut_runs, whole_runs) -> None:
    """The records a pack killed after its epoch-1 checkpoint leaves: the config in the checkpoint
    and in each config.json is the full pack's (no --max-steps), and the status still `running`
    (a --max-steps run ends `done`, and resume refuses any change of config)."""
    ckpt = cut_runs / "I2-s0" / "checkpoint.pt"
    ck = torch.load(ckpt, weights_only=True)
    ck["config"] = torch.load(whole_runs / "I2-s0" / "checkpoint.pt", weights_only=True)["config"]
    torch.save(ck, ckpt)
    for rid in ("I2-s0", "I3-s0"):
        meta, full = (json.loads((d / rid / "config.json").read_text())
                      for d in (cut_runs, whole_runs))
        meta["config"], meta["derived"] = dict(full["config"], out=meta["config"]["out"]), \
            full["derived"]
        (cut_runs / rid / "config.json").write_text(json.dumps(meta))
        status = json.loads((cut_runs / rid / "status.json").read_text())
        (cut_runs / rid / "status.json").write_text(json.dumps(dict(status, status="running")))


def test_sweep_driver_resumes_an_interrupted_pack(tmp_path):
    """A pack that stopped after its epoch-1 checkpoint (as a killed driver leaves it) is resumed
    by the rerun, not restarted, and ends with the rows of an uninterrupted pack."""
    train = ["--preset", "smoke", "--train-subset", "64", "--test-subset", "16", "--batch-size",
             "4", "--epochs", "2", "--checkpoint-every", "1", "--device", "cpu"]
    opts = ["--data", "synthetic", "--backend", "packed", "--pack", "--np", "2",
            "--intervals", "2,3", "--seeds", "0"]
    script = str(ROOT / "scripts" / "sweep.py")
    run_python([script, "--out", str(tmp_path / "whole"), *opts, "--", *train], timeout=600)
    # The interrupted sweep: its manifest says running, the pack got through epoch 1 only.
    cut = tmp_path / "cut"
    from prsgd.experiments import sweep as sweep_mod
    from prsgd.experiments.manifest import Manifest
    from prsgd.experiments.spec import job_command
    spec = sweep_mod.SweepSpec(intervals=[2, 3], seeds=[0], np=2, backend="packed", pack=True,
                               train_args=[*sweep_mod.data_args("synthetic"), *train])
    manifest = Manifest(cut, spec)
    for rid in ("I2-s0", "I3-s0"):
        manifest.update(rid, status="running", pack=[2, 3])
    job = [("I2-s0", 2, 0), ("I3-s0", 3, 0)]
    cmd = job_command(spec, cut / "runs", job, resume=False)
    run_python([*cmd[1:], "--max-steps", "8"], timeout=600)     # 8 steps = epoch 1 of 2
    assert len(pd.read_csv(cut / "runs" / "I2-s0" / "metrics.csv")) == 1
    as_if_killed(cut / "runs", tmp_path / "whole" / "runs")
    proc = run_python([script, "--out", str(cut), *opts, "--", *train], timeout=600)
    assert "resuming from its checkpoint" in proc.stdout
    runs = {r["run_id"]: r for r in json.loads((cut / "manifest.json").read_text())["runs"]}
    assert all(r["status"] == "done" and r["resumed"] for r in runs.values())
    for rid in ("I2-s0", "I3-s0"):
        pd.testing.assert_frame_equal(metric_frame(cut / "runs" / rid),
                                      metric_frame(tmp_path / "whole" / "runs" / rid))


def test_packed_sweep_diagnostics_equal_the_separate_runs(tmp_path):
    """--diagnostics in a packed sweep: each run measures its own replicas and writes its own
    diagnostics.csv, the same as that interval run alone."""
    from prsgd.train import run
    fp64 = ["--precision", "fp64", "--diagnostics"]
    sweep(tmp_path, "--run-id", "sw", *fp64)
    base = [a for a in ARGS if a not in ("--intervals", "3,5")]
    for interval in (3, 5):
        run(config_mod.from_args([*base, *fp64, "--interval", str(interval), "--out",
                                  str(tmp_path), "--run-id", f"alone{interval}"]))
        strip = lambda d: pd.read_csv(d / "diagnostics.csv").drop(columns=["diag_seconds"])
        packed, alone = strip(tmp_path / f"sw-I{interval}"), strip(tmp_path / f"alone{interval}")
        pd.testing.assert_frame_equal(packed, alone, check_exact=False, rtol=1e-8)
        assert (packed["consensus_mean"] > 0).all() and (packed["interval"] == interval).all()
    assert not strip(tmp_path / "sw-I3").equals(strip(tmp_path / "sw-I5"))
