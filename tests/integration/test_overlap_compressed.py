"""The delayed compressed round (`--overlap-delay 2 --compressor C`,
src/prsgd/algorithms/overlap_compressed.py) in real training runs, fp64:

- `horovodrun -np 2 --gloo` (int8: `allgather_async` of the byte rows; fp16:
  `allreduce_async_` in fp16) equals the same run packed, weights, residuals, metrics and bytes;
  `torchrun` (int8: `all_gather(async_op=True)`) too.
- A packed run interrupted at step 5 (its checkpoint is epoch 1's, step 4, with the round of step
  3 in flight) resumes bit-identical to the uninterrupted run, and would not if the checkpoint
  had dropped the pending round.
- The delay changes the training (not the synchronous compressed round).

The runs of tests/integration/test_overlap.py: 2 workers x 4 steps per epoch, 8 steps, I = 3,
TAU = 2: rounds start at 3 and 6 and are applied at 5 and 8 (the last step).
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import (ROOT, StopAt, horovodrun, load_ckpt, metric_frame, replica_rows,
                      torchrun)
from integration.test_overlap import OVERLAP, PACKED
from prsgd.core import config as config_mod
from prsgd.records.lifecycle import Interrupted
from prsgd.records.state import save_checkpoint
from prsgd.train import run

INT8, FP16 = ["--compressor", "int8"], ["--compressor", "fp16"]
HELPER = str(ROOT / "tests" / "helpers" / "stop_worker.py")


def train(out, *args, hooks=None):
    return run(config_mod.from_args([*args, "--out", str(out)]), hooks=hooks)


def assert_packed_equals(launched, tmp_path, compressor: list[str], name: str) -> None:
    """The launched 2-rank run equals the same run packed (to the rounding in which packed and
    per-rank convolutions differ), with the same bytes."""
    h = load_ckpt(launched)
    p = load_ckpt(train(tmp_path, *OVERLAP, *PACKED, *compressor, "--run-id", name))
    packed = replica_rows(p["ranks"][0]["flat"], 2)
    pres = p["ranks"][0]["algorithm"][0]["compressed"]["residuals"]
    for r in range(2):
        ref = h["ranks"][r]["flat"]
        assert float((packed[r] - ref).norm() / ref.norm()) < 1e-9, f"worker {r}"
        if pres is not None:
            hres = h["ranks"][r]["algorithm"][0]["compressed"]["residuals"][0]
            assert float((pres[r] - hres).norm() / hres.norm()) < 1e-6, f"worker {r} residual"
    mp, mh = metric_frame(tmp_path / name), metric_frame(launched)
    pd.testing.assert_frame_equal(mp, mh, check_exact=False, rtol=1e-8)
    for col in ("rounds", "bytes", "bytes_received", "bytes_allgather", "bytes_allreduce"):
        assert list(mp[col]) == list(mh[col]), col
    assert list(mh["rounds"]) == [0, 2]                    # waited for at steps 5 and 8


@pytest.mark.horovod
def test_packed_equals_horovodrun_int8_and_fp16(tmp_path):
    runs = {"int8": {"args": [*OVERLAP, *INT8]}, "fp16": {"args": [*OVERLAP, *FP16]}}
    horovodrun(2, [HELPER, str(tmp_path), json.dumps(runs)], timeout=900)
    assert_packed_equals(tmp_path / "int8" / "run", tmp_path, INT8, "p-int8")
    assert_packed_equals(tmp_path / "fp16" / "run", tmp_path, FP16, "p-fp16")
    # the ranks end on a (delayed) round: the same reference on both, holding the last average
    h = load_ckpt(tmp_path / "int8" / "run")
    refs = [h["ranks"][r]["algorithm"][0]["compressed"]["reference"] for r in range(2)]
    assert torch.equal(*refs)
    assert all(not h["ranks"][r]["algorithm"][0]["overlap"]["pending"] for r in range(2))


@pytest.mark.horovod
def test_packed_equals_torchrun_int8(tmp_path):
    torchrun(2, ["-m", "prsgd.train", *OVERLAP, *INT8, "--backend", "torchdist", "--out",
                 str(tmp_path), "--run-id", "td"], timeout=600)
    assert_packed_equals(tmp_path / "td", tmp_path, INT8, "p-int8")


def test_resume_inside_the_window_is_bit_identical(tmp_path):
    args = [*OVERLAP, *PACKED, *INT8, "--run-id", "r"]
    whole = load_ckpt(train(tmp_path / "whole", *args))
    with pytest.raises(Interrupted):
        train(tmp_path / "cut", *args, hooks=StopAt(5))
    cut_dir = tmp_path / "cut" / "r"
    first = load_ckpt(cut_dir)
    assert first["epoch"] == 1 and first["step"] == 4
    pending = first["ranks"][0]["algorithm"][0]["overlap"]
    assert pending["pending"] and pending["apply_at"] == 5
    # A copy of the checkpoint that dropped the pending round.
    spoiled_dir = tmp_path / "spoiled" / "r"
    spoiled_dir.mkdir(parents=True)
    for f in ("config.json", "metrics.csv"):
        (spoiled_dir / f).write_bytes((cut_dir / f).read_bytes())
    first["ranks"][0]["algorithm"][0]["overlap"] = {"pending": False}
    save_checkpoint(first, spoiled_dir / "checkpoint.pt")

    resumed = load_ckpt(train(tmp_path / "cut", *args, "--resume"))
    spoiled = load_ckpt(train(tmp_path / "spoiled", *args, "--resume"))
    assert torch.equal(resumed["ranks"][0]["flat"], whole["ranks"][0]["flat"])
    r, w = (c["ranks"][0]["algorithm"][0]["compressed"] for c in (resumed, whole))
    assert torch.equal(r["reference"], w["reference"])
    assert all(torch.equal(a, b) for a, b in zip(r["residuals"], w["residuals"]))
    pd.testing.assert_frame_equal(metric_frame(cut_dir), metric_frame(tmp_path / "whole" / "r"))
    assert float((spoiled["ranks"][0]["flat"] - whole["ranks"][0]["flat"]).abs().max()) > 1e-9


def test_the_delay_changes_the_compressed_training(tmp_path):
    delayed = load_ckpt(train(tmp_path, *OVERLAP, *PACKED, *INT8, "--run-id", "d"))
    sync = load_ckpt(train(tmp_path, *OVERLAP, *PACKED, *INT8, "--overlap-delay", "0",
                           "--run-id", "s"))
    d, s = (replica_rows(c["ranks"][0]["flat"], 2) for c in (delayed, sync))
    assert float((d[0] - s[0]).abs().max()) > 1e-6
    assert sync["ranks"][0]["algorithm"][0].keys() == {"compressed"}   # the synchronous path
