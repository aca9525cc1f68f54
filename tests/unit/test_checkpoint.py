"""Runs that survive: SIGKILL and exact resume, refused resumes, a dead rank, divergence.

The distributed tests launch real `horovodrun -np 2 --gloo` jobs and kill real processes.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from conftest import subprocess_env

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


# --- single-process (packed backend) tests: same code path for checkpoints, cheaper -----------


def test_checkpoint_loads_with_weights_only_and_write_is_atomic(tmp_path):
    from prsgd.records import checkpoint
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_atomic({"format": 1, "x": torch.arange(3)}, path)
    # A crash while writing the next one leaves only the temporary file: the old one stands.
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    # A truncated checkpoint is refused with a message, not half-trusted.
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.ConfigError, match="unreadable.*--restart"):
        checkpoint.load_checkpoint(path)
