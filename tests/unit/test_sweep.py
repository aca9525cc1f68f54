"""The sweep driver, Figure 3 and the notebook, end to end with real training runs.

The tiny sweep goes through the real driver and `horovodrun -np 2 --gloo`; the resume and failure
tests use the packed backend (one process per run) to stay fast: the driver logic is the same.
"""
from __future__ import annotations


import pandas as pd
import pytest

from prsgd.plots import figure3 as plot
from prsgd.experiments import sweep


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


def test_error_message_prefers_the_trainers_own_line():
    err = ["[1]<stderr>:Traceback ...", "[0]<stderr>:prsgd.train: error: --lr: must be > 0 (got -1.0)",
           "Process 0 exit with status code 2."]
    msg = sweep.error_message(1, [], err, None)
    assert msg.splitlines()[0] == "prsgd.train: error: --lr: must be > 0 (got -1.0)"
    assert "Process 0 exit with status code 2." in msg
    assert sweep.error_message(None, [], [], 5).startswith("timed out after 5 s")


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
