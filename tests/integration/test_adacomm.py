"""AdaComm (src/prsgd/algorithms/adacomm.py) in real runs:

- the recorded intervals follow the rule applied to the run's own recorded training losses, and
  the recorded rounds are the schedule of those intervals (an interval change really happens);
- with the update period beyond the run (and I dividing the epoch) it is Algorithm 1, bitwise;
- an interrupted run resumes bit-identically across an interval change, and only because the
  decided intervals are in the checkpoint;
- the packed backend equals `horovodrun -np 2 --gloo` in fp64.

2 workers x 32-image shards / batch 4 = 8 steps per epoch, tau_0 = 6, 4 epochs.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import StopAt, horovodrun, load_ckpt, metric_frame, replica_rows
from prsgd.algorithms.adacomm import COLUMN, next_interval
from prsgd.core import config as config_mod
from prsgd.core.schedule import Adaptive
from prsgd.records.lifecycle import Interrupted
from prsgd.records.state import save_checkpoint
from prsgd.train import run
from unit.test_adacomm import ADACOMM, BASE, PACKED   # the same runs in both tiers

SPE = 8


def train(out, *args, hooks=None):
    return run(config_mod.from_args([*args, "--out", str(out)]), hooks=hooks)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("adacomm")
    train(out, *ADACOMM, *PACKED, "--run-id", "a")
    return out


def test_recorded_intervals_follow_the_recorded_losses(runs):
    m = metric_frame(runs / "a")
    loss, used = list(m["train_loss"]), [int(v) for v in m[COLUMN]]
    expect = [6]
    for f in loss[:-1]:          # E = 1: epoch e + 1 runs with the interval from epoch e's loss
        expect.append(next_interval(6, loss[0], f, SPE, expect[-1]))
    assert used == expect
    assert len(set(used)) > 1, f"no interval change in this run ({used}): the test is vacuous"
    # the rounds metrics.csv counted are those of the schedule with these intervals
    sched = Adaptive(tuple(used), SPE, 2)
    assert list(m["rounds"]) == [sum(bool(sched.events(t)) for t in range(1, SPE * (e + 1) + 1))
                                 for e in range(len(used))]


def test_an_update_period_beyond_the_run_is_algorithm_1(tmp_path):
    """tau_0 = 4 divides the 8-step epoch and E = 10 > 4 epochs: no decision ever applies, the
    schedule is Periodic(4): the same weights, bit for bit."""
    args = [*BASE, *PACKED, "--interval", "4"]
    a1 = load_ckpt(train(tmp_path, *args, "--run-id", "alg1"))
    ada = load_ckpt(train(tmp_path, *args, "--algorithm", "adacomm", "--adacomm-every-epochs",
                          "10", "--run-id", "ada"))
    assert torch.equal(a1["ranks"][0]["flat"], ada["ranks"][0]["flat"])
    assert list(metric_frame(tmp_path / "alg1")["rounds"]) == [2, 4, 6, 8]


def test_resume_is_bit_identical_across_an_interval_change(runs, tmp_path):
    args = [*ADACOMM, *PACKED, "--run-id", "a"]
    whole = load_ckpt(runs / "a")
    used = [int(v) for v in metric_frame(runs / "a")[COLUMN]]
    with pytest.raises(Interrupted):                     # mid epoch 3, after 2 decisions
        train(tmp_path / "cut", *args, hooks=StopAt(2 * SPE + 3))
    cut_dir = tmp_path / "cut" / "a"
    first = load_ckpt(cut_dir)
    assert first["epoch"] == 2
    saved = first["ranks"][0]["algorithm"][0]
    assert saved["intervals"] == used[:3] and saved["f0"] is not None
    # Spoil a copy: the same checkpoint with the decided intervals forgotten (tau_0 throughout).
    spoiled_dir = tmp_path / "spoiled" / "a"
    spoiled_dir.mkdir(parents=True)
    for f in ("config.json", "metrics.csv"):
        (spoiled_dir / f).write_bytes((cut_dir / f).read_bytes())
    first["ranks"][0]["algorithm"][0]["intervals"] = [6, 6, 6]
    save_checkpoint(first, spoiled_dir / "checkpoint.pt")

    train(tmp_path / "cut", *args, "--resume")
    train(tmp_path / "spoiled", *args, "--resume")
    resumed, spoiled = load_ckpt(cut_dir), load_ckpt(spoiled_dir)
    assert torch.equal(resumed["ranks"][0]["flat"], whole["ranks"][0]["flat"])
    assert resumed["ranks"][0]["algorithm"] == whole["ranks"][0]["algorithm"]
    pd.testing.assert_frame_equal(metric_frame(cut_dir), metric_frame(runs / "a"))
    assert used[2] != 6       # epoch 3 ran with a decided interval, not tau_0: forgetting it shows
    assert not torch.equal(spoiled["ranks"][0]["flat"], whole["ranks"][0]["flat"])


@pytest.mark.horovod
def test_packed_equals_horovodrun(runs, tmp_path):
    horovodrun(2, ["-m", "prsgd.train", *ADACOMM, "--out", str(tmp_path), "--run-id", "hvd"],
               timeout=600)
    h, p = load_ckpt(tmp_path / "hvd"), load_ckpt(runs / "a")
    packed = replica_rows(p["ranks"][0]["flat"], 2)
    for r in range(2):
        ref = h["ranks"][r]["flat"]
        assert float((packed[r] - ref).norm() / ref.norm()) < 1e-9, f"worker {r}"
        assert h["ranks"][r]["algorithm"][0]["intervals"] == \
            p["ranks"][0]["algorithm"][0]["intervals"]
    hm, pm = metric_frame(tmp_path / "hvd"), metric_frame(runs / "a")
    assert list(hm[COLUMN]) == list(pm[COLUMN]) and list(hm["rounds"]) == list(pm["rounds"])
    pd.testing.assert_frame_equal(pm, hm, check_exact=False, rtol=1e-8)
