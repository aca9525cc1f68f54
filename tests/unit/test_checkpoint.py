"""Runs that survive: SIGKILL and exact resume, refused resumes, a dead rank, divergence.

The distributed tests launch real `horovodrun -np 2 --gloo` jobs and kill real processes.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import (
    horovodrun, load_ckpt, metric_rows, run_status, subprocess_env)

# 2 workers x 64-image shards / batch 8 = 8 steps per epoch; I = 5 does not divide 8, so the
# workers' local models differ at every epoch boundary: a checkpoint must keep all of them.
TINY = ["-m", "prsgd.train", "--preset", "smoke", "--dataset", "synthetic", "--train-subset", "128",
        "--test-subset", "64", "--batch-size", "8", "--epochs", "3", "--interval", "5",
        "--seed", "7", "--progress", "true"]


def launch(args: list[str]) -> subprocess.Popen:
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    return subprocess.Popen([exe, "-np", "2", "--gloo", sys.executable, *args],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def kill_launch(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run with the same seed."""
    out = tmp_path_factory.mktemp("ref")
    horovodrun(2, [*TINY, "--out", str(out), "--run-id", "ref"], timeout=300)
    return out / "ref"


def assert_same_run(run_dir: Path, ref: Path):
    a, b = load_ckpt(run_dir), load_ckpt(ref)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 24)
    for r in (0, 1):
        assert torch.equal(a["ranks"][r]["flat"], b["ranks"][r]["flat"]), f"rank {r} weights"
    # The two workers' models differ (24 % 5 != 0): restoring one for both would not match.
    assert not torch.equal(b["ranks"][0]["flat"], b["ranks"][1]["flat"])
    assert metric_rows(run_dir) == metric_rows(ref)
    assert [r["epoch"] for r in metric_rows(run_dir)] == ["1", "2", "3"]
    assert run_status(run_dir)["status"] == "done"


# --- single-process (packed backend) tests: same code path for checkpoints, cheaper -----------
PACKED = ["-m", "prsgd.train", "--preset", "smoke", "--backend", "packed", "--workers", "2",
          "--train-subset", "64", "--test-subset", "32", "--batch-size", "8", "--epochs", "2",
          "--interval", "4", "--progress", "false"]


def test_checkpoint_loads_with_weights_only_and_write_is_atomic(tmp_path):
    from prsgd.records import state as checkpoint
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint({"format": 1, "x": torch.arange(3)}, path)
    # A crash while writing the next one leaves only the temporary file: the old one stands.
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    # A truncated checkpoint is refused with a message, not half-trusted.
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.ConfigError, match="unreadable.*--restart"):
        checkpoint.load_checkpoint(path)
