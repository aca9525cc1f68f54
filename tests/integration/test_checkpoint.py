"""Runs that survive: SIGKILL and exact resume, refused resumes, a dead rank, divergence.

The distributed tests launch real `horovodrun -np 2 --gloo` jobs and kill real processes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    horovodrun, load_ckpt, metric_rows, rank_pids, run_python, run_status, subprocess_env,
    wait_for)

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


@pytest.mark.horovod
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "victim"
    proc = launch([*TINY, "--out", str(tmp_path), "--run-id", "victim"])
    try:
        # Kill every rank with SIGKILL just after the epoch-1 checkpoint: inside epoch 2.
        wait_for(lambda: run_status(run_dir).get("checkpoint_epoch") == 1, 240, "epoch 1", proc)
        time.sleep(0.3)
        pids = rank_pids("victim")
        assert sorted(pids) == [0, 1], pids
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        kill_launch(proc)
    assert proc.returncode != 0
    killed_at = run_status(run_dir)
    assert killed_at["status"] == "running" and killed_at["checkpoint_epoch"] in (1, 2)
    assert load_ckpt(run_dir)["epoch"] == killed_at["checkpoint_epoch"] < 3

    res = horovodrun(2, [*TINY, "--out", str(tmp_path), "--run-id", "victim", "--resume"],
                     timeout=300)
    assert f"resumed from the checkpoint of epoch {killed_at['checkpoint_epoch']}" in res.stdout
    assert_same_run(run_dir, reference)
    meta = json.loads((run_dir / "config.json").read_text())
    assert [r["from_epoch"] for r in meta["resumes"]] == [killed_at["checkpoint_epoch"]]


@pytest.mark.horovod
def test_killing_one_rank_fails_fast_and_resume_finishes(tmp_path, reference):
    run_dir = tmp_path / "onedead"
    proc = launch([*TINY, "--out", str(tmp_path), "--run-id", "onedead"])
    try:
        wait_for(lambda: run_status(run_dir).get("checkpoint_epoch") == 1, 240, "epoch 1", proc)
        pid = rank_pids("onedead")[1]
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        proc.wait(90)
        elapsed = time.monotonic() - t0
    finally:
        kill_launch(proc)
    log = proc.stdout.read()
    assert proc.returncode != 0, log[-3000:]
    assert elapsed < 60, f"horovodrun took {elapsed:.1f}s to give up"
    print(f"horovodrun exited {proc.returncode} {elapsed:.1f} s after SIGKILL of rank 1; "
          f"rank 0 status: {run_status(run_dir).get('status')}")
    # Rank 0 was stopped by the launcher (or by a Horovod error): never reported as done.
    assert run_status(run_dir)["status"] in ("running", "interrupted", "failed")
    # The next invocation finishes it, with the same result as an uninterrupted run.
    horovodrun(2, [*TINY, "--out", str(tmp_path), "--run-id", "onedead", "--resume"], timeout=300)
    assert_same_run(run_dir, reference)


# --- single-process (packed backend) tests: same code path for checkpoints, cheaper -----------
PACKED = ["-m", "prsgd.train", "--preset", "smoke", "--backend", "packed", "--workers", "2",
          "--train-subset", "64", "--test-subset", "32", "--batch-size", "8", "--epochs", "2",
          "--interval", "4", "--progress", "false"]


def test_resume_with_changed_interval_is_refused_and_restart_starts_over(tmp_path):
    run_python([*PACKED, "--out", str(tmp_path), "--run-id", "r"])
    run_dir = tmp_path / "r"
    before = {f: (run_dir / f).read_bytes() for f in ("checkpoint.pt", "metrics.csv",
                                                      "config.json")}
    p = run_python([*PACKED, "--interval", "8", "--out", str(tmp_path), "--run-id", "r",
                    "--resume"], check=False)
    assert p.returncode == 2
    assert "--interval: 4 in the run, 8 now" in p.stderr and "--restart" in p.stderr
    assert {f: (run_dir / f).read_bytes() for f in before} == before  # nothing touched

    p = run_python([*PACKED, "--interval", "8", "--out", str(tmp_path), "--run-id", "r"],
                   check=False)
    assert p.returncode == 2 and "already holds a run (status done)" in p.stderr

    run_python([*PACKED, "--interval", "8", "--out", str(tmp_path), "--run-id", "r",
                "--restart"])
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["config"]["interval"] == 8 and "resumes" not in meta
    ck = load_ckpt(run_dir)
    assert json.loads(ck["config"])["interval"] == 8
    # Fresh rows only: 2 epochs, rounds counted from zero under I = 8 (8 steps per epoch).
    rows = metric_rows(run_dir)
    assert [(r["epoch"], r["rounds"]) for r in rows] == [("1", "0"), ("2", "1")]


def test_resume_drops_rows_after_the_checkpoint_and_continues(tmp_path):
    """A kill after an epoch's row was written but before its checkpoint: the row is dropped,
    the epoch redone, and the finished run equals an uninterrupted one."""
    run_python([*PACKED, "--out", str(tmp_path), "--run-id", "ref"])
    run_python([*PACKED, "--epochs", "2", "--out", str(tmp_path), "--run-id", "cut",
                "--checkpoint-every", "1"])
    cut = tmp_path / "cut"
    ck = load_ckpt(cut)
    assert ck["epoch"] == 2
    # The state "checkpoint of epoch 1, row of epoch 2 already written": put in the epoch-1
    # checkpoint of a twin run stopped after its first epoch by --max-steps.
    run_python([*PACKED, "--max-steps", "4", "--out", str(tmp_path), "--run-id", "one"])
    one = load_ckpt(tmp_path / "one")
    assert one["epoch"] == 1
    one["config"] = ck["config"]          # the run's own config (the twin differs in --max-steps)
    torch.save(one, cut / "checkpoint.pt")
    (cut / "status.json").unlink()
    assert len(metric_rows(cut)) == 2     # the epoch-2 row is there, the checkpoint is older
    run_python([*PACKED, "--out", str(tmp_path), "--run-id", "cut", "--resume"])
    assert metric_rows(cut) == metric_rows(tmp_path / "ref")
    assert torch.equal(load_ckpt(cut)["ranks"][0]["flat"],
                       load_ckpt(tmp_path / "ref")["ranks"][0]["flat"])


def test_nan_loss_stops_as_diverged_with_epoch_and_step(tmp_path):
    import re
    p = run_python([*PACKED, "--lr", "1e6", "--out", str(tmp_path), "--run-id", "nan"],
                   check=False)
    assert p.returncode == 3, p.stderr
    m = re.search(r"diverged: training loss is (nan|inf) in epoch (\d+): first non-finite loss "
                  r"at step (\d+) \(worker [01]\)", p.stderr)
    assert m, p.stderr
    epoch, step = int(m[2]), int(m[3])
    assert (epoch - 1) * 4 < step <= epoch * 4          # 4 steps per epoch: inside that epoch
    st = run_status(tmp_path / "nan")
    assert st["status"] == "diverged" and m[0].split(": ", 1)[1] in st["message"]
    # Nothing of the diverged epoch is kept: rows and checkpoint stop at the epoch before.
    assert [r["epoch"] for r in metric_rows(tmp_path / "nan")] == [str(e) for e in range(1, epoch)]
    if epoch > 1:
        assert load_ckpt(tmp_path / "nan")["epoch"] == epoch - 1
    else:
        assert not (tmp_path / "nan" / "checkpoint.pt").exists()


def test_sigterm_stops_as_interrupted_and_keeps_the_checkpoint(tmp_path):
    run_dir = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, *PACKED, "--epochs", "50", "--out", str(tmp_path),
                             "--run-id", "term"], env=subprocess_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (run_status(run_dir).get("checkpoint_epoch") or 0) >= 1, 240, "epoch 1",
                 proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    st = run_status(run_dir)
    assert st["status"] == "interrupted" and st["epoch"] < 50
    assert f"checkpoint of epoch {st['checkpoint_epoch']}" in st["message"]
    assert load_ckpt(run_dir)["epoch"] == st["checkpoint_epoch"]
