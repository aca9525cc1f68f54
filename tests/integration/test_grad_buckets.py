"""gradient_allreduce --bucket-mb on real ranks: bucketed allreduces started inside backward give
the single call's weights (<= 1e-12 in fp64) and the same rounds and bytes, under
`horovodrun -np 2 --gloo` (bucket sizes: one bucket per parameter, 14 buckets, one bucket) and
`torchrun`; the packed backend equals Horovod, and a bucketed run resumes bit for bit.

2 workers x 16-image shards / batch 4 = 4 steps per epoch, 2 epochs, momentum 0.9, fp64.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import (ROOT, StopAt, horovodrun, load_ckpt, metric_frame, replica_rows,
                      torchrun)
from prsgd.core import config as config_mod
from prsgd.core.flat import FlatModel
from prsgd.core.models import ResNet20
from prsgd.records.lifecycle import Interrupted
from prsgd.train import run

pytestmark = pytest.mark.horovod

BASE = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "32", "--test-subset",
        "16", "--batch-size", "4", "--epochs", "2", "--lr-milestones", "1", "--seed", "3",
        "--momentum", "0.9", "--precision", "fp64", "--eval-every", "0", "--device", "cpu",
        "--algorithm", "gradient_allreduce"]
PACKED = ["--backend", "packed", "--workers", "2"]
# --bucket-mb: 1e-9 closes a bucket after every parameter (59 of ResNet20), 0.05 makes 14,
# 100 one (the whole 2.1 MB fp64 gradient: started when backward ends, no overlap).
BUCKETS = {"per_param": ("1e-9", 59), "mid": ("0.05", 14), "one": ("100", 1)}
P = FlatModel(ResNet20(replicas=1), 1).num_params   # one worker's parameters


@pytest.fixture(scope="module")
def hvd(tmp_path_factory) -> Path:
    """The plain run and each bucketed one in ONE horovodrun launch (family_worker.py)."""
    out = tmp_path_factory.mktemp("gar")
    runs = {"plain": BASE, **{k: [*BASE, "--bucket-mb", mb] for k, (mb, _) in BUCKETS.items()}}
    horovodrun(2, [str(ROOT / "tests" / "helpers" / "family_worker.py"), str(out),
                   json.dumps(runs)], timeout=900)
    return out


def ranks_flat(run_dir: Path) -> list[torch.Tensor]:
    """Each worker's [params | BN stats | momentum] from a run's last checkpoint."""
    ck = load_ckpt(run_dir)
    if len(ck["ranks"]) == 1:   # packed: both workers are rows of one buffer
        return replica_rows(ck["ranks"][0]["flat"], 2)
    return [r["flat"] for r in ck["ranks"]]


def assert_close(a: torch.Tensor, b: torch.Tensor, rel: float, what: str) -> None:
    diff = float((a - b).abs().max())
    assert diff <= rel * float(b.abs().max()), f"{what}: max |difference| {diff}"


def test_bucketed_equals_one_call_on_horovod(hvd):
    plain = ranks_flat(hvd / "plain" / "run")
    for name, (mb, count) in BUCKETS.items():
        run_dir = hvd / name / "run"
        for r, flat in enumerate(ranks_flat(run_dir)):
            assert_close(flat, plain[r], 1e-12, f"--bucket-mb {mb}, rank {r}")
        derived = json.loads((run_dir / "config.json").read_text())["derived"]
        assert derived["grad_buckets"] == count
        assert sum(derived["grad_bucket_bytes"]) == P * 8         # the whole fp64 gradient
        # Rounds and bytes on the wire read as the single call's: one round of the gradient.
        m, p = metric_frame(run_dir), metric_frame(hvd / "plain" / "run")
        pd.testing.assert_frame_equal(m, p, check_exact=False, rtol=1e-10)
        assert list(m["rounds"]) == [4, 8]
        assert int(m["bytes"].iloc[-1]) == 8 * sum(derived["grad_bucket_bytes"])
    # Not vacuous: the gradients were averaged (the ranks' weights agree; BN statistics stay
    # local and differ) and the weights moved after the first step.
    assert torch.equal(plain[0][:P], plain[1][:P]) and not torch.equal(plain[0], plain[1])
    early = torch.load(hvd / "plain" / "rank0.early.pt", weights_only=True)
    assert float((plain[0][:P] - early[:P]).abs().max()) > 1e-3


def test_torchrun_buckets_equal_horovods_one_call(hvd, tmp_path):
    torchrun(2, ["-m", "prsgd.train", *BASE, "--bucket-mb", "0.05", "--backend", "torchdist",
                 "--progress", "false", "--out", str(tmp_path), "--run-id", "td"], timeout=600)
    plain = ranks_flat(hvd / "plain" / "run")
    for r, flat in enumerate(ranks_flat(tmp_path / "td")):
        assert_close(flat, plain[r], 1e-12, f"torchrun rank {r}")
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "td"),
                                  metric_frame(hvd / "plain" / "run"), check_exact=False,
                                  rtol=1e-10)


def train(out, *args, hooks=None):
    return run(config_mod.from_args([*BASE, *PACKED, *args, "--progress", "false", "--out",
                                     str(out)]), hooks=hooks)


def test_packed_equals_horovod_and_a_bucketed_run_resumes_bit_for_bit(hvd, tmp_path):
    plain = ranks_flat(hvd / "plain" / "run")
    whole = train(tmp_path / "whole", "--bucket-mb", "0.05", "--run-id", "b")
    packed_plain = train(tmp_path / "plain", "--run-id", "p")
    for r, (a, b) in enumerate(zip(ranks_flat(whole), ranks_flat(packed_plain))):
        assert torch.equal(a, b), f"packed worker {r}: bucketed != one call"
        assert float((a - plain[r]).norm() / plain[r].norm()) < 1e-9, f"packed worker {r}"
    with pytest.raises(Interrupted):                    # mid epoch 2
        train(tmp_path / "cut", "--bucket-mb", "0.05", "--run-id", "b", hooks=StopAt(6))
    assert load_ckpt(tmp_path / "cut" / "b")["epoch"] == 1
    train(tmp_path / "cut", "--bucket-mb", "0.05", "--run-id", "b", "--resume")
    assert torch.equal(load_ckpt(tmp_path / "cut" / "b")["ranks"][0]["flat"],
                       load_ckpt(whole)["ranks"][0]["flat"])
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "cut" / "b"), metric_frame(whole))
