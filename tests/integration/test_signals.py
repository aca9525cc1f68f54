"""Signals under a real `horovodrun -np 2 --gloo` (issue 14).

- SIGTERM to ONE rank: the job stops and the run records `interrupted` (rank 0 sees the peer's
  exit as a HorovodInternalError; it used to record `failed`).
- SIGTERM/SIGINT to the launcher: plain horovodrun ends the ranks (`interrupted`) but exits 1
  whatever the signal; launched through `python -m prsgd.supervise` (as `make train` does) the job
  exits 143/130, and nothing is left running.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import rank_pids, subprocess_env, wait_for
from conftest import run_status
from integration.test_checkpoint import TINY, launch, kill_launch

LONG = [*TINY, "--epochs", "40"]


@pytest.mark.horovod
def test_sigterm_to_one_rank_records_interrupted(tmp_path):
    run_dir = tmp_path / "one"
    proc = launch([*LONG, "--out", str(tmp_path), "--run-id", "one"])
    try:
        wait_for(lambda: run_status(run_dir).get("checkpoint_epoch") == 1, 240, "epoch 1", proc)
        os.kill(rank_pids("one")[1], signal.SIGTERM)
        proc.wait(120)
    finally:
        kill_launch(proc)
    st = run_status(run_dir)
    assert proc.returncode != 0
    assert st["status"] == "interrupted", st
    assert "--resume continues from the checkpoint of epoch" in st["message"]


def launched(wrapped: bool, tmp_path, run_id: str) -> subprocess.Popen:
    import shutil
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    cmd = [exe, "-np", "2", "--gloo", sys.executable, *LONG, "--out", str(tmp_path),
           "--run-id", run_id]
    if wrapped:
        cmd = [sys.executable, "-m", "prsgd.supervise", *cmd]
    return subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.horovod
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_exits_128_plus_the_signal_through_prsgd_supervise(tmp_path, sig):
    codes = {}
    for wrapped in (False, True):
        rid = f"{'wrapped' if wrapped else 'plain'}-{sig.name}"
        proc = launched(wrapped, tmp_path, rid)
        try:
            wait_for(lambda: run_status(tmp_path / rid).get("checkpoint_epoch") == 1, 240,
                     "epoch 1", proc)
            proc.send_signal(sig)        # to the launcher (or the wrapper) alone
            out, _ = proc.communicate(timeout=120)
        finally:
            kill_launch(proc)
        codes[wrapped] = proc.returncode
        assert run_status(tmp_path / rid)["status"] == "interrupted", out[-2000:]
        assert not rank_pids(rid), "a rank outlived its launcher"
    print(f"{sig.name}: plain horovodrun exited {codes[False]}, through prsgd.supervise "
          f"{codes[True]}")
    assert codes[True] == 128 + sig
    assert codes[False] != 0           # horovodrun's own code (1 with Horovod 0.28.1)
