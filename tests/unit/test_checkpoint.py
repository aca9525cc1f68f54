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


def test_the_lifecycle_records_each_outcome_and_asks_the_backend_about_peers(tmp_path):
    """status.json says running inside the guard and how it ended after; a watch lives exactly
    as long as the guarded loop; whether an error means a stopped peer is the backend's call."""
    from contextlib import contextmanager
    from types import SimpleNamespace
    from prsgd.core.divergence import Diverged
    from prsgd.records import rundir
    from prsgd.records.lifecycle import Interrupted, RunLifecycle

    seen = []

    @contextmanager
    def watch():
        seen.append("enter")
        try:
            yield
        finally:
            seen.append("exit")

    def lifecycle(peer_stopped: bool):
        ck = SimpleNamespace(saved_epoch=1, resumed_from=None,
                             release=lambda: seen.append("released"))
        comm = SimpleNamespace(rank=0, stopped_by_peer=lambda e, t: peer_stopped)
        loop = SimpleNamespace(epoch=1, step=8, last_step_at=0.0)
        return RunLifecycle(comm=comm, run_dirs=[tmp_path / "r"], loop=loop, num_epochs=2,
                            checkpoint=ck)

    lc = lifecycle(peer_stopped=False)
    lc.watch(watch())
    with pytest.raises(RuntimeError):
        with lc.guard(Diverged):
            assert rundir.read_status(tmp_path / "r")["status"] == "running"
            assert seen == ["enter"]
            raise RuntimeError("boom")
    assert seen == ["enter", "exit", "released"]
    st = rundir.read_status(tmp_path / "r")
    assert (st["status"], st["message"], st["checkpoint_epoch"]) == ("failed", "RuntimeError: boom", 1)

    with pytest.raises(Interrupted):
        with lifecycle(peer_stopped=True).guard(Diverged):
            raise RuntimeError("a peer's collective broke")
    st = rundir.read_status(tmp_path / "r")
    assert st["status"] == "interrupted" and "--resume continues from the checkpoint of epoch 1" \
        in st["message"]

    with lifecycle(peer_stopped=False).guard(Diverged):
        pass
    assert rundir.read_status(tmp_path / "r")["status"] == "done"
