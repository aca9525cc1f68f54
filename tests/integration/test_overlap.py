"""Overlapped averaging (`--overlap-delay`, src/prsgd/algorithms/overlap.py) with real ranks:

- `horovodrun -np 2 --gloo` (allreduce_async_) equals the packed backend in fp64, and so do
  `torchrun` (all_reduce(async_op=True)) and the I = 3 run of a packed sweep `--intervals 3,4`;
  the delay changes the result (not Algorithm 1's).
- A run checkpointed at an epoch end INSIDE an in-flight window (the round of step 3 is applied
  at step 5; epoch 1 ends at step 4) and interrupted at step 5 resumes under a fresh
  `horovodrun` bit-identical to the uninterrupted run: the checkpoint holds the finished average.

2 workers x 16-image shards / batch 4 = 4 steps per epoch, 8 steps; I = 3, TAU = 2: rounds start
at steps 3 and 6 and are applied at 5 and 8 (the last step).
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import (ROOT, horovodrun, load_ckpt, metric_frame, metric_rows, replica_rows,
                      torchrun)
from prsgd.core import config as config_mod
from prsgd.train import run

pytestmark = pytest.mark.horovod

OVERLAP = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "32",
           "--test-subset", "16", "--batch-size", "4", "--epochs", "2", "--seed", "3",
           "--interval", "3", "--overlap-delay", "2", "--momentum", "0.9", "--precision", "fp64",
           "--progress", "false", "--device", "cpu"]
PACKED = ["--backend", "packed", "--workers", "2"]
HELPER = str(ROOT / "tests" / "helpers" / "stop_worker.py")


def train(out, *args):
    return run(config_mod.from_args([*args, "--out", str(out)]))


@pytest.fixture(scope="module")
def hvd(tmp_path_factory):
    """OUT/ref/run: the uninterrupted Horovod run; OUT/cut/run: its twin interrupted after step
    5 (its last checkpoint is epoch 1's, step 4, with the round of step 3 in flight)."""
    out = tmp_path_factory.mktemp("overlap")
    runs = {"ref": {"args": OVERLAP}, "cut": {"args": OVERLAP, "stop": 5}}
    horovodrun(2, [HELPER, str(out), json.dumps(runs)], timeout=900)
    return out


def test_checkpoint_inside_a_window_resumes_bit_identical(hvd):
    cut, ref = hvd / "cut" / "run", hvd / "ref" / "run"
    first = load_ckpt(cut)
    assert first["epoch"] == 1 and first["step"] == 4
    rounds = [first["ranks"][r]["algorithm"][0]["overlap"] for r in range(2)]
    for r in rounds:   # in flight at the checkpoint: saved with its finished average
        assert r["pending"] and r["apply_at"] == 5
    assert torch.equal(rounds[0]["average"], rounds[1]["average"])       # one average for all
    assert float((rounds[0]["snapshot"] - rounds[1]["snapshot"]).abs().max()) > 0   # drifted
    assert first["ranks"][0]["counters"]["rounds"]["global"] == 1       # counted by the wait

    res = horovodrun(2, ["-m", "prsgd.train", *OVERLAP, "--out", str(cut.parent), "--run-id",
                         "run", "--resume", "--progress", "true"], timeout=600)
    assert "resumed from the checkpoint of epoch 1" in res.stdout, res.stdout[-3000:]
    whole, resumed = load_ckpt(ref), load_ckpt(cut)
    for r in range(2):
        assert torch.equal(resumed["ranks"][r]["flat"], whole["ranks"][r]["flat"]), f"rank {r}"
        assert not resumed["ranks"][r]["algorithm"][0]["overlap"]["pending"]
    assert metric_rows(cut) == metric_rows(ref)
    assert [r["rounds"] for r in metric_rows(ref)] == ["0", "2"]   # waited for at 5 and 8


def test_packed_equals_horovodrun_and_differs_from_algorithm_1(hvd, tmp_path):
    h = load_ckpt(hvd / "ref" / "run")
    p = load_ckpt(train(tmp_path, *OVERLAP, *PACKED, "--run-id", "packed"))
    packed = replica_rows(p["ranks"][0]["flat"], 2)
    for r in range(2):
        ref = h["ranks"][r]["flat"]
        assert float((packed[r] - ref).norm() / ref.norm()) < 1e-9, f"worker {r}"
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "packed"),
                                  metric_frame(hvd / "ref" / "run"), check_exact=False, rtol=1e-8)
    plain = [*OVERLAP, "--overlap-delay", "0"]   # Algorithm 1 (the last flag wins)
    a1 = replica_rows(load_ckpt(train(tmp_path, *plain, *PACKED, "--run-id", "a1"))
                      ["ranks"][0]["flat"], 2)
    assert float((a1[0] - packed[0]).abs().max()) > 1e-6   # the delay changes the training


def test_packed_sweep_run_equals_horovodrun(hvd, tmp_path):
    """--intervals 3,4: the I = 3 run of a packed sweep (4 replicas, the real loop calling both
    runs' rounds) is the Horovod run; the I = 4 run's rounds did not touch its rows."""
    from prsgd.train import train_packed_sweep
    dirs = train_packed_sweep(config_mod.from_args([*OVERLAP, *PACKED, "--intervals", "3,4",
                                                    "--out", str(tmp_path), "--run-id", "sw"]))
    assert [d.name for d in dirs] == ["sw-I3", "sw-I4"]
    rows = replica_rows(load_ckpt(dirs[0])["ranks"][0]["flat"], 4)
    h = load_ckpt(hvd / "ref" / "run")
    for r in range(2):
        ref = h["ranks"][r]["flat"]
        assert float((rows[r] - ref).norm() / ref.norm()) < 1e-9, f"worker {r}"
    pd.testing.assert_frame_equal(metric_frame(dirs[0]), metric_frame(hvd / "ref" / "run"),
                                  check_exact=False, rtol=1e-8)
    # I = 4: rounds start at 4 (the epoch end; waited for at 6) and at 8 (the last step: at once)
    assert [r["rounds"] for r in metric_rows(dirs[1])] == ["0", "2"]


def test_torchrun_equals_horovodrun(hvd, tmp_path):
    torchrun(2, ["-m", "prsgd.train", *OVERLAP, "--backend", "torchdist", "--out",
                 str(tmp_path), "--run-id", "td"], timeout=600)
    t, h = load_ckpt(tmp_path / "td"), load_ckpt(hvd / "ref" / "run")
    for r in range(2):
        ref = h["ranks"][r]["flat"]
        assert float((t["ranks"][r]["flat"] - ref).norm() / ref.norm()) < 1e-9, f"rank {r}"
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "td"),
                                  metric_frame(hvd / "ref" / "run"), check_exact=False, rtol=1e-8)
