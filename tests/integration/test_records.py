"""Records that never lie (issue 14): a resume must match what ran, a finished run is never
retrained, config.json is strict JSON, only the shared copy is held to its known hash, a torn
metrics.csv is named, an I/O failure mid-run ends with one line and `failed`, and a speed-up is
shown only where it means something.

Single-process runs of the packed backend: the record logic is the same as under Horovod.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import bad_inputs
from conftest import load_ckpt, metric_rows, subprocess_env

from prsgd.train import main

BASE = bad_inputs.BASE


def train(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([*BASE, *args])
    return code, err.getvalue()


def files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


# --- resume compares the whole config ---------------------------------------------------------
def test_resume_refuses_any_change_and_records_operational_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("PRSGD_CACHE", str(tmp_path / "cache"))
    out = ["--out", str(tmp_path), "--run-id", "r", "--epochs", "2", "--max-steps", "2"]
    assert train(*out)[0] == 0                       # stopped after epoch 1 by --max-steps
    run = tmp_path / "r"
    (run / "status.json").write_text('{"status": "interrupted"}')   # as a kill leaves it
    before = files(run)
    for change in (["--test-subset", "16"], ["--max-steps", "0"], ["--eval-every", "2"]):
        code, err = train(*out, "--resume", *change)
        assert code == 2 and f"--{change[0][2:]}: " in err and "in the run" in err, err
        assert files(run) == before                  # a refused resume touches nothing
    code, err = train(*out, "--resume", "--progress", "true", "--checkpoint-every", "2")
    assert code == 0, err
    meta = json.loads((run / "config.json").read_text())
    assert meta["resumes"][0]["changed"] == {"progress": [False, True],
                                             "checkpoint_every": [1, 2]}


def test_a_done_run_is_never_retrained_by_resume(tmp_path, monkeypatch):
    """Also without a checkpoint (--checkpoint-every 0): today it was trained again from scratch
    and its config.json (with the original provenance) replaced."""
    monkeypatch.setenv("PRSGD_CACHE", str(tmp_path / "cache"))
    for rid, extra in (("nock", ["--checkpoint-every", "0"]), ("ck", [])):
        out = ["--out", str(tmp_path), "--run-id", rid, *extra]
        assert train(*out)[0] == 0
        before = files(tmp_path / rid)
        code, err = train(*out, "--resume")
        assert code == 0 and "is already done (epoch 1); nothing to resume" in err, err
        assert files(tmp_path / rid) == before


# --- strict JSON ---------------------------------------------------------------------------------
# --- only the shared copy is held to its known sha256 -------------------------------------------
# --- metrics.csv torn by a kill -----------------------------------------------------------------
# The committed layout of metrics.csv (results/ must keep loading): the trainer's row keys.
METRIC_COLUMNS = ("epoch", "step", "train_seconds", "train_loss", "train_acc", "lr", "rounds",
                  "rounds_local", "bytes", "compute_seconds", "comm_seconds", "test_loss",
                  "test_acc", "full_train_loss", "bytes_local", "comm_seconds_local",
                  "worker_steps")
HEADER = ",".join(METRIC_COLUMNS)


def row(epoch: int, loss: str = "0.5") -> str:
    vals = {"epoch": str(epoch), "step": str(4 * epoch), "train_seconds": "1.5",
            "train_loss": loss, "train_acc": "0.25", "lr": "0.1"}
    return ",".join(vals.get(c, "") for c in METRIC_COLUMNS)


def run_dir_with(tmp_path: Path, lines: list[str]) -> Path:
    run = tmp_path / "r"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps({"config": {"run_id": "r"}}))
    (run / "metrics.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    return run


# --- the speed-up column --------------------------------------------------------------------------


# --- an I/O failure mid-run -----------------------------------------------------------------------
def assert_io_failure(p, path: Path, reason: str, errno: int, run: Path) -> dict:
    """Exit 1, no traceback, ONE stderr line naming `path` and the error; status.json of `run`
    says `failed` and why. Returns the status."""
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == [f"prsgd.train: error: {path}: {reason} (errno {errno})"], p.stderr
    st = json.loads((run / "status.json").read_text())
    assert st["status"] == "failed" and reason in st["message"], st
    return st


def test_io_failure_mid_run_is_one_line_status_failed_nothing_lost(tmp_path):
    """Files in the run directory may not grow past 64 KiB (RLIMIT_FSIZE; EFBIG, as a full or
    failing disk would answer): the first checkpoint (MBs) fails mid-write after epoch 1's row.
    The run ends with one line naming the file, exit 1, status.json `failed`, and the row, the
    config.json and no half checkpoint in place of a good one."""
    def limit():
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    cmd = [sys.executable, "-m", "prsgd.train", *BASE, "--epochs", "2", "--out", str(tmp_path),
           "--run-id", "io"]
    p = subprocess.run(cmd, env=subprocess_env(PRSGD_CACHE=tmp_path / "cache"), text=True,
                       capture_output=True, preexec_fn=limit, timeout=300)
    run = tmp_path / "io"
    assert_io_failure(p, run / "checkpoint.pt.tmp", "File too large", 27, run)
    assert len(pd.read_csv(run / "metrics.csv")) == 1
    assert json.loads((run / "config.json").read_text())["config"]["run_id"] == "io"
    assert not (run / "checkpoint.pt").exists()


def test_full_disk_mid_run_keeps_the_last_checkpoint_and_resumes_exactly(tmp_path):
    """The run directory is a 6 MB tmpfs (mounted in a private mount namespace of the run's own:
    nothing outside the test changes): epoch 1's checkpoint (4.3 MB) fits, epoch 2's does not.
    The run ends with one line naming the file and ENOSPC, exit 1, no traceback, status.json
    `failed` (the half-written .tmp is removed, which also frees the space to say so), epoch 1's
    checkpoint whole; resumed elsewhere it finishes bit-identically to an uninterrupted run."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a tmpfs in a mount namespace); CI runs as root")
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    args = ["--epochs", "3", "--checkpoint-every", "1", "--run-id", "full"]
    # the shell copies the run directory out before the namespace (and its tmpfs) goes away
    script = (f'mount -t tmpfs -o size=6m tmpfs "{disk}" && "$@"; rc=$?; '
              f'cp -a "{disk}/full" "{kept}/"; exit $rc')
    kept.mkdir()
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        "sh", sys.executable, "-m", "prsgd.train", *BASE, *args, "--out",
                        str(disk)], env=subprocess_env(PRSGD_CACHE=tmp_path / "cache"),
                       capture_output=True, text=True, timeout=300)
    run = kept / "full"
    st = assert_io_failure(p, disk / "full" / "checkpoint.pt.tmp", "No space left on device", 28,
                           run)
    assert st["checkpoint_epoch"] == 1
    assert not (run / "checkpoint.pt.tmp").exists()
    assert load_ckpt(run)["epoch"] == 1
    # resumed on a disk with room: the same weights and rows as a run never interrupted
    code, err = train(*args, "--out", str(kept), "--resume")
    assert code == 0, err
    code, err = train(*args, "--out", str(tmp_path / "whole"))
    assert code == 0, err
    whole = tmp_path / "whole" / "full"
    assert metric_rows(run) == metric_rows(whole) and len(metric_rows(run)) == 3
    a, b = load_ckpt(run), load_ckpt(whole)
    assert all(torch.equal(x["flat"], y["flat"]) for x, y in zip(a["ranks"], b["ranks"]))
