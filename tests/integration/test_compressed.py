"""Compressed averaging rounds (algorithms/compressed.py, issue 19) in real training runs, fp64.

- The identity compressor through the compressed round (the code path every compressor takes:
  deltas from the reference, exchanged, decoded, added back) equals Algorithm 1 to 1e-12, on the
  packed backend and under `horovodrun -np 2 --gloo`; `--compressor none` is Algorithm 1's own
  round (no compressed round is built: bitwise Algorithm 1).
- A lossy compressor (int8, top-k) gives the same run packed and under horovodrun; bf16 and int8
  the same packed and under torchrun.
- A packed sweep (--intervals) of compressed runs: each run as alone. DiLoCo with --compressor
  resumes bit-identically.
- metrics.csv's bytes are the payload sizes, computed here from the formats (not from the
  compressors' `payload_bytes`): sent, received, and by collective.
- A run interrupted mid-epoch resumes bit-identically, and only because the reference and the
  error-feedback residuals are in the checkpoint.
The round's arithmetic in process: tests/unit/test_compressed_round.py.

2 workers x 16-image shards / batch 4 = 4 steps per epoch; I = 2: 2 rounds per epoch.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from conftest import (ROOT, StopAt, horovodrun, load_ckpt, metric_frame, replica_rows,
                      torchrun)
from helpers.compressed_worker import identity_round
from prsgd.core import config as config_mod
from prsgd.core.flat import FlatModel
from prsgd.core.models import ResNet20
from prsgd.records.lifecycle import Interrupted
from prsgd.records.state import save_checkpoint
from prsgd.train import run
from unit.test_diloco import BASE, PACKED   # the same small fp64 runs

TOPK = ["--compressor", "topk", "--topk-ratio", "0.05"]
WORKER = str(ROOT / "tests" / "helpers" / "compressed_worker.py")


def train(out, *args, hooks=None):
    return run(config_mod.from_args([*args, "--out", str(out)]), hooks=hooks)


def sizes() -> tuple[int, int]:
    """P parameters and S BN statistics of one ResNet20."""
    fm = FlatModel(ResNet20(replicas=1), 1)
    return fm.num_params, fm.num_stats


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("compressed")
    train(out, *BASE, *PACKED, "--run-id", "alg1")
    train(out, *BASE, *PACKED, "--compressor", "none", "--run-id", "none")
    identity_round(config_mod.from_args([*BASE, *PACKED, "--out", str(out), "--run-id",
                                         "identity"]))
    train(out, *BASE, *PACKED, *TOPK, "--run-id", "topk")
    return out


def test_identity_through_the_compressed_round_is_algorithm_1(runs):
    a1, idr = (load_ckpt(runs / r)["ranks"][0] for r in ("alg1", "identity"))
    x, y = a1["flat"], idr["flat"]
    # x̄ + mean(x_i - x̄) where Algorithm 1 makes mean(x_i): equal up to rounding only.
    assert float((x - y).abs().max()) < 1e-12 * float(x.abs().max())
    # The round kept the last average as its reference (the run ends on a round).
    P = FlatModel(ResNet20(replicas=2), 2).num_params // 2
    rows = replica_rows(y, 2)
    assert torch.equal(idr["algorithm"][0]["compressed"]["reference"], rows[0][:P])
    assert torch.equal(rows[0][:P], rows[1][:P])
    # Not vacuous: 4 rounds, the same bytes as Algorithm 1 (the identity sends the fp64 model),
    # and the model moved.
    m1, mi = metric_frame(runs / "alg1"), metric_frame(runs / "identity")
    assert list(mi["rounds"]) == [2, 4]
    assert list(mi["bytes"]) == list(m1["bytes"])
    torch.manual_seed(3)
    start = FlatModel(ResNet20(replicas=1).double(), 1).params
    assert float((rows[0][:P] - start).abs().max()) > 1e-3


def test_compressor_none_is_algorithm_1s_own_round(runs):
    """`--compressor none` builds no compressed round: bitwise Algorithm 1, no state."""
    a1, none = (load_ckpt(runs / r)["ranks"][0] for r in ("alg1", "none"))
    assert torch.equal(a1["flat"], none["flat"])
    assert none["algorithm"] == [{}]
    cfg = config_mod.from_args([*BASE, *PACKED, "--compressor", "none"])
    from prsgd.algorithms import algorithm_class
    algo = algorithm_class("prsgd")(cfg, workers=2, local_workers=[0, 1], steps_per_epoch=4,
                                    total_steps=8, backend="packed")
    assert algo.compressed is None


def test_a_lossy_round_gives_every_worker_the_same_model(runs):
    """Top-k 5 %: the workers' parameters agree after the last round (and differ from
    Algorithm 1's), BN statistics are the exact average, the residuals are non-zero."""
    ck = load_ckpt(runs / "topk")["ranks"][0]
    P, S = sizes()
    rows = replica_rows(ck["flat"], 2)
    assert torch.equal(rows[0][:P + S], rows[1][:P + S])
    a1 = replica_rows(load_ckpt(runs / "alg1")["ranks"][0]["flat"], 2)
    assert float((rows[0][:P] - a1[0][:P]).abs().max()) > 1e-4
    res = ck["algorithm"][0]["compressed"]["residuals"]
    assert len(res) == 2 and all(float(r.abs().max()) > 0 for r in res)
    assert not torch.equal(res[0], res[1])      # each worker keeps its own


@pytest.mark.parametrize("compressor, workers", [("fp16", 2), ("int8", 3), ("topk", 3)])
def test_bytes_in_metrics_are_the_payload_sizes(tmp_path, compressor, workers):
    """Per round, one worker sends its payload plus the fp32 statistics (an exact allreduce) and
    receives the averaged payload (casts) or the N-1 other payloads (allgather)."""
    args = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", str(16 * workers),
            "--test-subset", "16", "--batch-size", "4", "--epochs", "2", "--interval", "2",
            "--progress", "false", "--device", "cpu", "--backend", "packed", "--workers",
            str(workers), "--compressor", compressor, "--eval-every", "0"]
    m = pd.read_csv(train(tmp_path, *args, "--run-id", "r") / "metrics.csv")
    P, S = sizes()
    payload = {"fp16": 2 * P, "int8": P + 4 * math.ceil(P / 1024),
               "topk": 8 * math.ceil(0.01 * P)}[compressor]
    stats = 4 * S
    got = payload if compressor == "fp16" else (workers - 1) * payload
    rounds = m["rounds"].to_numpy()
    assert list(rounds) == [2, 4]
    assert list(m["bytes"]) == list(rounds * (payload + stats))
    assert list(m["bytes_received"]) == list(rounds * (got + stats))
    gathered = 0 if compressor == "fp16" else payload
    assert list(m["bytes_allgather"]) == list(rounds * gathered)
    assert list(m["bytes_allreduce"]) == list(rounds * (payload + stats - gathered))


def test_resume_is_bit_identical_and_needs_the_residuals(runs, tmp_path):
    args = [*BASE, *PACKED, *TOPK, "--run-id", "topk"]
    whole = load_ckpt(runs / "topk")
    with pytest.raises(Interrupted):                    # step 7: mid epoch 2, after round 3
        train(tmp_path / "cut", *args, hooks=StopAt(7))
    cut_dir = tmp_path / "cut" / "topk"
    first = load_ckpt(cut_dir)
    assert first["epoch"] == 1
    saved = first["ranks"][0]["algorithm"][0]["compressed"]
    assert all(float(r.abs().max()) > 0 for r in saved["residuals"])
    # Spoil a copy: the same checkpoint with the residuals forgotten.
    spoiled_dir = tmp_path / "spoiled" / "topk"
    spoiled_dir.mkdir(parents=True)
    for f in ("config.json", "metrics.csv"):
        (spoiled_dir / f).write_bytes((cut_dir / f).read_bytes())
    saved["residuals"] = [torch.zeros_like(r) for r in saved["residuals"]]
    save_checkpoint(first, spoiled_dir / "checkpoint.pt")

    train(tmp_path / "cut", *args, "--resume")
    train(tmp_path / "spoiled", *args, "--resume")
    resumed, spoiled = load_ckpt(cut_dir), load_ckpt(spoiled_dir)
    assert torch.equal(resumed["ranks"][0]["flat"], whole["ranks"][0]["flat"])
    r, w = (c["ranks"][0]["algorithm"][0]["compressed"] for c in (resumed, whole))
    assert torch.equal(r["reference"], w["reference"])
    assert all(torch.equal(a, b) for a, b in zip(r["residuals"], w["residuals"]))
    pd.testing.assert_frame_equal(metric_frame(cut_dir), metric_frame(runs / "topk"))
    assert float((spoiled["ranks"][0]["flat"] - whole["ranks"][0]["flat"]).abs().max()) > 1e-9


def test_without_error_feedback_no_residual_is_kept(tmp_path):
    ck = load_ckpt(train(tmp_path, *BASE, *PACKED, *TOPK, "--error-feedback", "false",
                         "--run-id", "noef", "--epochs", "1"))
    assert ck["ranks"][0]["algorithm"][0]["compressed"]["residuals"] is None


@pytest.mark.horovod
def test_identity_round_under_horovodrun_is_algorithm_1(tmp_path):
    horovodrun(2, [WORKER, *BASE, "--out", str(tmp_path)], timeout=900)
    a1, idr = load_ckpt(tmp_path / "alg1"), load_ckpt(tmp_path / "identity")
    P, _ = sizes()
    for r in range(2):
        x, y = a1["ranks"][r]["flat"], idr["ranks"][r]["flat"]
        assert float((x - y).abs().max()) < 1e-12 * float(x.abs().max()), f"rank {r}"
        assert torch.equal(idr["ranks"][r]["algorithm"][0]["compressed"]["reference"], y[:P])
    assert torch.equal(idr["ranks"][0]["flat"][:P], idr["ranks"][1]["flat"][:P])
    assert list(metric_frame(tmp_path / "identity")["rounds"]) == [2, 4]


def assert_packed_equals(launched, tmp_path, compressor: list[str]) -> None:
    """The launched run (2 ranks) equals the same run packed: the same batches, the same
    compressed rounds, so the same weights (to the rounding in which packed and per-rank
    convolutions differ) and residuals, the same metrics and exactly the same bytes."""
    h = load_ckpt(launched)
    p = load_ckpt(train(tmp_path, *BASE, *PACKED, *compressor, "--run-id", "packed"))
    packed = replica_rows(p["ranks"][0]["flat"], 2)
    pres = p["ranks"][0]["algorithm"][0]["compressed"]["residuals"]
    for r in range(2):
        ref = h["ranks"][r]["flat"]
        assert float((packed[r] - ref).norm() / ref.norm()) < 1e-9, f"worker {r}"
        hres = h["ranks"][r]["algorithm"][0]["compressed"]["residuals"][0]
        assert float((pres[r] - hres).norm() / hres.norm()) < 1e-6, f"worker {r} residual"
    mp, mh = metric_frame(tmp_path / "packed"), metric_frame(launched)
    pd.testing.assert_frame_equal(mp, mh, check_exact=False, rtol=1e-8)
    for col in ("bytes", "bytes_received", "bytes_allgather", "bytes_allreduce"):
        assert list(mp[col]) == list(mh[col]), col
    assert mh["bytes"].iloc[-1] > 0 and mh["bytes_received"].iloc[-1] > 0


@pytest.mark.horovod
@pytest.mark.parametrize("compressor", [["--compressor", "int8"], TOPK], ids=["int8", "topk"])
def test_packed_equals_horovodrun(tmp_path, compressor):
    horovodrun(2, ["-m", "prsgd.train", *BASE, *compressor, "--out", str(tmp_path),
                   "--run-id", "hvd"], timeout=900)
    assert_packed_equals(tmp_path / "hvd", tmp_path, compressor)


@pytest.mark.horovod
@pytest.mark.parametrize("compressor", ["bf16", "int8"])
def test_packed_equals_torchrun(tmp_path, compressor):
    """torch.distributed: a bfloat16 allreduce (which Horovod lacks) and the uint8 allgather."""
    args = ["--compressor", compressor]
    torchrun(2, ["-m", "prsgd.train", *BASE, *args, "--backend", "torchdist", "--out",
                 str(tmp_path), "--run-id", "td"], timeout=900)
    assert_packed_equals(tmp_path / "td", tmp_path, args)


def test_a_packed_sweep_of_compressed_runs_equals_its_runs_alone(tmp_path):
    """--intervals 1,2 --compressor int8: each packed run has its own round, reference and
    residuals, and I = 2 trains exactly as alone (the same metrics, the same bytes)."""
    args = [*BASE, *PACKED, "--compressor", "int8"]
    train(tmp_path, *args, "--intervals", "1,2", "--run-id", "sweep")
    alone = train(tmp_path, *args, "--interval", "2", "--run-id", "alone")
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "sweep-I2"), metric_frame(alone))
    one = metric_frame(tmp_path / "sweep-I1")
    assert list(one["rounds"]) == [4, 8] and list(metric_frame(alone)["rounds"]) == [2, 4]


def test_compressed_diloco_resumes_bit_identically(tmp_path):
    """DiLoCo's outer step from the int8 average: its copy, outer momentum, the round's
    reference and residuals all come back from the checkpoint."""
    args = [*BASE, *PACKED, "--algorithm", "diloco", "--compressor", "int8", "--run-id", "d"]
    whole = load_ckpt(train(tmp_path / "whole", *args))
    with pytest.raises(Interrupted):
        train(tmp_path / "cut", *args, hooks=StopAt(7))
    assert load_ckpt(tmp_path / "cut" / "d")["epoch"] == 1
    resumed = load_ckpt(train(tmp_path / "cut", *args, "--resume"))
    assert torch.equal(resumed["ranks"][0]["flat"], whole["ranks"][0]["flat"])
    r, w = resumed["ranks"][0]["algorithm"][0], whole["ranks"][0]["algorithm"][0]
    assert torch.equal(r["copy"], w["copy"]) and torch.equal(r["outer_momentum"],
                                                             w["outer_momentum"])
    assert torch.equal(r["compressed"]["reference"], w["compressed"]["reference"])
    assert all(torch.equal(a, b) for a, b in zip(r["compressed"]["residuals"],
                                                 w["compressed"]["residuals"]))
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "cut" / "d"),
                                  metric_frame(tmp_path / "whole" / "d"))
