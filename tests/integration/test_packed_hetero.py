"""Algorithm 3 (unequal local steps per round) on the packed backend: the workers advance in
lockstep iterations in which only those with steps left in the round step; the idle ones keep
their weights, BN statistics and momentum. It must compute what `horovodrun -np 2` computes.

2 workers x 64-image shards / batch 8 = 8 steps per epoch; worker 0 averages after 2 of its
steps, worker 1 after 3 (a reported epoch = 8 // 3 = 2 rounds; 3 epochs of steps = 8 rounds).
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import StopAt, horovodrun, load_ckpt, metric_frame, replica_rows, run_python
from prsgd.core import config as config_mod
from prsgd.records.lifecycle import Interrupted
from prsgd.train import run
from unit.test_packed_hetero import HETERO   # the same runs in both tiers


@pytest.mark.horovod
def test_packed_hetero_equals_horovodrun(tmp_path):
    horovodrun(2, ["-m", "prsgd.train", *HETERO, "--out", str(tmp_path), "--run-id", "hvd"],
               timeout=600)
    run_python(["-m", "prsgd.train", *HETERO, "--backend", "packed", "--workers", "2",
                "--device", "cpu", "--out", str(tmp_path), "--run-id", "packed"], timeout=600)
    h, p = load_ckpt(tmp_path / "hvd"), load_ckpt(tmp_path / "packed")
    packed = replica_rows(p["ranks"][0]["flat"], 2)
    for r in range(2):
        ref = h["ranks"][r]["flat"]
        assert float((packed[r] - ref).norm() / ref.norm()) < 1e-9, f"worker {r}"
        assert h["ranks"][r]["loop"]["step"] == p["ranks"][0]["loop"]["worker_step_counts"][r]
    assert p["ranks"][0]["loop"]["worker_step_counts"] == [16, 24]
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "packed"), metric_frame(tmp_path / "hvd"),
                                  check_exact=False, rtol=1e-8)
    assert (tmp_path / "packed" / "rounds.jsonl").read_text() == \
        (tmp_path / "hvd" / "rounds.jsonl").read_text()
    # Guard against a vacuous pass: the workers really differ between rounds.
    assert float((packed[0] - packed[1]).norm()) > 0


def test_packed_hetero_resumes_exactly(tmp_path):
    args = [*HETERO, "--backend", "packed", "--workers", "2", "--device", "cpu",
            "--precision", "fp32", "--checkpoint-every", "1", "--run-id", "h", "--out"]
    run(config_mod.from_args([*args, str(tmp_path / "whole")]))
    with pytest.raises(Interrupted):     # worker 0's step 7: in epoch 2 (rounds 3-4)
        run(config_mod.from_args([*args, str(tmp_path / "cut")]), hooks=StopAt(7))
    run(config_mod.from_args([*args, str(tmp_path / "cut"), "--resume"]))
    a, b = load_ckpt(tmp_path / "whole" / "h"), load_ckpt(tmp_path / "cut" / "h")
    assert torch.equal(a["ranks"][0]["flat"], b["ranks"][0]["flat"])
    assert b["ranks"][0]["loop"]["worker_step_counts"] == [16, 24]
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "cut" / "h"), metric_frame(tmp_path / "whole" / "h"))
    rounds = [json.loads(line) for line in
              (tmp_path / "cut" / "h" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == list(range(1, 9))
