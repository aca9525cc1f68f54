"""The sweep driver, Figure 3 and the notebook, end to end with real training runs.

The tiny sweep goes through the real driver and `horovodrun -np 2 --gloo`; the resume and failure
tests use the packed backend (one process per run) to stay fast: the driver logic is the same.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from prsgd.plots import figure3 as plot
from prsgd.experiments import sweep
from prsgd.experiments.spec import driver_flags


# --- 1. a tiny sweep through horovodrun, then the plot -------------------------------------------
# --- 2. interrupted and continued ----------------------------------------------------------------
# --- 3. one failing run --------------------------------------------------------------------------
# --- argument checks and helpers (no processes) --------------------------------------------------
@pytest.mark.parametrize("opts, train, message", [
    (["--intervals", "1,0"], [], "--intervals: every I must be a positive integer"),
    (["--np", "0"], [], "--np: must be a positive integer"),
    ([], ["--interval", "4"], "--interval: the sweep sets"),
    ([], ["--out=x"], "--out: the sweep sets"),
    ([], ["--see", "3"], "unrecognized arguments: --see 3"),    # no abbreviations
    (["--override", "I1-s0=--seed=4"], [], "--override I1-s0: --seed: the sweep sets"),
    (["--seeds", "1,1"], [], "--seeds: each seed once"),
    (["--override", "I3-s0=--lr 1"], [], "--override: expected RUN_ID=ARGS with RUN_ID one of"),
])
def test_bad_sweep_arguments_are_refused(opts, train, message):
    args = sweep.build_parser().parse_args(["--out", "x", *opts])
    with pytest.raises(sweep.SweepError, match=message.replace("(", r"\(")):
        sweep.spec_from_args(args, train)


def test_data_sources(tmp_path):
    assert sweep.data_args("synthetic") == ["--dataset", "synthetic"]
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert sweep.data_args(str(tmp_path)) == ["--dataset", "cifar10", "--data", str(tmp_path)]
    with pytest.raises(sweep.SweepError, match="--data: .* does not exist"):
        sweep.data_args(str(tmp_path / "nope"))


def write_status(run_dir: Path, status: str, message: str = "") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps({"status": status, "message": message}))


def test_a_runs_outcome_is_its_status_json_not_its_output(tmp_path):
    """The trainer's printed lines say nothing to the driver: a run is what its status.json (of
    this attempt) says, and done needs exit status 0 too."""
    started = time.time() - 1
    err = ["[0]<stderr>:prsgd.train: done", "Process 0 exit with status code 2."]
    write_status(tmp_path / "A", "done")
    write_status(tmp_path / "B", "diverged", "training loss is nan in epoch 2")
    write_status(tmp_path / "C", "running")                        # killed: never said more
    write_status(tmp_path / "E", "interrupted", "stopped by SIGTERM")
    out = {rid: (st, err_) for rid, st, err_ in
           sweep.job_outcomes(tmp_path, ["A", "B", "C", "D", "E"], 0, err, None, started)}
    assert out["A"] == ("done", None)
    assert out["B"][0] == "diverged" and out["B"][1].startswith("training loss is nan")
    assert out["C"][0] == "failed" and "still says running" in out["C"][1]
    assert out["D"][0] == "failed" and "no status.json" in out["D"][1]     # refused at start
    assert "Process 0 exit with status code 2." in out["D"][1]             # the stderr tail
    assert out["E"][0] == "interrupted"
    # done, but the process then failed (e.g. aborted at exit): not done
    assert sweep.job_outcomes(tmp_path, ["A"], 134, [], None, started)[0][1] == "failed"
    # a status.json left by an earlier attempt says nothing about this one ...
    later = time.time() + 5
    assert sweep.job_outcomes(tmp_path, ["C"], 0, [], None, later)[0][1] == "failed"
    # ... unless it was already finished: --resume of a done run trains nothing and exits 0
    assert sweep.job_outcomes(tmp_path, ["A"], 0, [], None, later)[0][1] == "done"
    assert sweep.job_outcomes(tmp_path, ["A"], None, [], 5, started)[0][2].startswith(
        "timed out after 5 s")


def test_a_packed_job_reports_each_runs_own_outcome(tmp_path):
    """One packed run diverged: it is `diverged`; the run stopped with it says `failed` in its
    own status.json (written by the trainer's lifecycle), and the driver takes both as written."""
    started = time.time() - 1
    write_status(tmp_path / "I4-s0", "diverged", "training loss is nan in epoch 2 of run(s) I4-s0")
    write_status(tmp_path / "I1-s0", "failed", "stopped: a run packed with it diverged")
    out = {rid: st for rid, st, _ in
           sweep.job_outcomes(tmp_path, ["I1-s0", "I4-s0"], 3, [], None, started)}
    assert out == {"I1-s0": "failed", "I4-s0": "diverged"}


# --- issue 21 §3: the flags the driver sets are refused everywhere else --------------------------
def spec_args(*opts, train=()):
    args = sweep.build_parser().parse_args(["--out", "x", *opts])
    return sweep.spec_from_args(args, list(train))


@pytest.mark.parametrize("opts, train, message", [
    # the driver appends --workers N to a packed run: an override may not replace it silently
    (["--backend", "packed", "--override", "I4-s0=--workers 4"], [],
     "--override I4-s0: --workers: the sweep sets"),
    (["--backend", "packed"], ["--workers", "3"], "--workers: the sweep sets"),
    # every rank of a Horovod sweep would start a whole packed job in one run directory
    (["--backend", "horovod"], ["--backend", "packed"], "--backend: the sweep sets"),
    (["--override", "I4-s0=--backend=torchdist"], [], "--override I4-s0: --backend: the sweep"),
    (["--launcher", "mpirun"], ["--backend", "packed"], "--backend: the sweep sets"),
    # N is the sweep's --np: a run of another N would not be the sweep's run
    (["--np", "2", "--override", "I1-s0=--workers 4"], [], "--override I1-s0: --workers: the"),
    ([], ["--restart"], "--restart: the sweep sets"),
    ([], ["--intervals", "1,2"], "--intervals: the sweep sets"),
])
def test_the_sweeps_managed_flags_are_refused_wherever_else_they_appear(opts, train, message):
    with pytest.raises(sweep.SweepError, match=message):
        spec_args("--intervals", "1,4", *opts, train=train)


def test_managed_flags_are_read_off_the_commands_the_driver_builds():
    for backend in ("horovod", "packed"):
        spec = sweep.SweepSpec(intervals=[1, 4], backend=backend)
        managed = set(sweep.managed_flags(spec))
        for job in sweep.jobs(spec, spec.run_ids()):
            built = driver_flags(spec, Path("runs"), job, resume=True)
            assert {a for a in built if a.startswith("--")} <= managed
        assert {"--backend", "--workers", "--resume", "--restart"} <= managed


def test_the_progress_line_carries_elapsed_time_and_eta():
    out = io.StringIO()
    p = sweep.Progress(2, out)
    p.start("I1-s0")
    p.sweep_t0 -= 30
    p.job_t0 -= 10     # 10 s into the run, 1 of 4 epochs done
    p.epoch("I1-s0", 1, 4)
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("sweep: run 1/2 I1-s0 [") and "epoch 1/4 10 s ETA 30 s" in line
    assert "sweep [" in line and " 12% 30 s ETA 3 min 30 s" in line
    p.epoch("I1-s0", 1, 4)                  # the same epoch again: no second line
    assert len(out.getvalue().splitlines()) == 2
    assert sweep.clock(3725) == "1 h 02 min" and sweep.clock(65) == "1 min 05 s"


def test_summary_table_means_over_seeds_and_speedup():
    rows = []
    for interval, secs in ((1, 100.0), (8, 40.0)):
        for seed, loss in ((0, 1.0), (1, 2.0)):
            for epoch in (1, 2):
                rows.append(dict(run_id=f"I{interval}-s{seed}", interval=interval, seed=seed,
                                 epoch=epoch, step=epoch * 16, train_loss=loss / epoch,
                                 test_acc=0.1 * epoch + seed * 0.1, rounds=epoch * 16 // interval,
                                 bytes=epoch * 16 // interval * 400,
                                 train_seconds=secs * epoch / 2, comm_seconds=1.0))
    t = plot.summary_table(pd.DataFrame(rows))
    assert list(t["seeds"]) == [2, 2]
    assert list(t["final_train_loss"]) == [0.75, 0.75]
    assert list(t["best_test_acc"]) == pytest.approx([0.25, 0.25])
    assert list(t["rounds"]) == [32, 4]
    assert list(t["speedup_vs_I1"]) == [1.0, 2.5]


# --- 4. the notebook -----------------------------------------------------------------------------
def test_subset_is_a_fixed_random_sample_not_the_first_images():
    """An ImageFolder copy is sorted by class: the first n images would be one or two classes."""
    import torch
    from prsgd.data.dataset import Dataset
    y = torch.arange(10).repeat_interleave(500)                       # sorted by class
    x = torch.zeros(len(y), 3, 32, 32, dtype=torch.uint8)
    ds = Dataset(x, y, x[:1000], y[:1000].clone(), "t", "t", "t")
    a, b = ds.subset(400, 100), ds.subset(400, 100)
    assert torch.equal(a.train_y, b.train_y)                          # the same in every run
    assert len(a.train_y) == 400 and len(torch.unique(a.train_y)) == 10
    assert torch.bincount(a.train_y).min() >= 20
    assert len(a.test_y) == 100
    assert ds.subset(0, 0).train_y is y
