"""Runs that survive: SIGKILL and exact resume, refused resumes, a dead rank, divergence.

The distributed tests launch real `horovodrun -np 2 --gloo` jobs and kill real processes.
"""
from __future__ import annotations


import pytest
import torch



# --- single-process (packed backend) tests: same code path for checkpoints, cheaper -----------


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
