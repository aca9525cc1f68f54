"""No rank outlives its launcher (issue 21 §4): `kill -9` of horovodrun, torchrun and mpirun in the
middle of a real 2-rank run. Every process the launcher had started is gone within the watchdog's
bound (prsgd.launch.watchdog.BOUND_S, plus the interpreter's exit), status.json says
`interrupted` (never `running` or `done`), and a resume under the same launcher ends bit-identical
to an uninterrupted run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import (load_ckpt, metric_rows, run_status, subprocess_env, torchrun_command,
                      wait_for)
from prsgd.launch import commands as launch
from prsgd.launch.watchdog import BOUND_S

pytestmark = pytest.mark.horovod
EXIT_S = 3.0          # an interpreter's exit after the watchdog acted (atexit, thread joins)
# 128 images / 2 workers / batch 8 = 8 steps per epoch; 6 epochs: the kill after the first
# checkpoint leaves most of the run ahead.
ARGS = ["-m", "prsgd.train", "--preset", "smoke", "--dataset", "synthetic", "--train-subset",
        "128", "--test-subset", "32", "--batch-size", "8", "--epochs", "6", "--interval", "5",
        "--seed", "7", "--eval-every", "0", "--progress", "false"]


def command(launcher: str, args: list[str]) -> tuple[list[str], dict]:
    if launcher == "horovodrun":
        exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
        return [exe, "-np", "2", "--gloo", sys.executable, *args], subprocess_env()
    if launcher == "torchrun":
        return torchrun_command(2, [*args, "--backend", "torchdist"]), subprocess_env()
    from integration.test_mpi import need_mpi
    need_mpi()
    return [*launch.mpirun_prefix(2), sys.executable, *args], subprocess_env(**launch.root_env())


def run(launcher: str, args: list[str]) -> None:
    cmd, env = command(launcher, args)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def job_processes(launcher_pid: int) -> list[psutil.Process]:
    return psutil.Process(launcher_pid).children(recursive=True)


def alive(procs) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("launcher", ["horovodrun", "torchrun", "mpirun"])
def test_kill_9_of_the_launcher_ends_every_rank_within_the_bound(tmp_path, launcher):
    run_dir = tmp_path / "cut"
    args = [*ARGS, "--out", str(tmp_path), "--run-id", "cut"]
    cmd, env = command(launcher, args)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    job = []
    try:
        wait_for(lambda: run_status(run_dir).get("checkpoint_epoch") == 1, 240, "epoch 1", proc)
        job = job_processes(proc.pid)      # the ranks and whatever the launcher put between
        assert sum("prsgd.train" in p.cmdline() for p in job) >= 2, [p.cmdline() for p in job]
        os.kill(proc.pid, signal.SIGKILL)         # the launcher alone, as the OOM killer would
        t0 = time.monotonic()
        proc.wait(30)
        while alive(job) and time.monotonic() - t0 < BOUND_S + EXIT_S + 30:
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        left = alive(job)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
        for p in job_processes_safe(proc.pid):
            p.kill()
    print(f"{launcher}: kill -9 -> no process of the job left after {elapsed:.1f} s "
          f"(bound {BOUND_S:g} s + {EXIT_S:g} s exit)")
    assert not left, left
    assert elapsed < BOUND_S + EXIT_S, f"{elapsed:.1f} s"
    st = run_status(run_dir)
    assert st["status"] == "interrupted" and 1 <= st["epoch"] < 6, st
    assert "the launcher is gone" in st["message"], st
    # Nothing writes after the rank stopped: status.json stays as it is.
    before = (run_dir / "status.json").read_bytes()
    time.sleep(1.0)
    assert (run_dir / "status.json").read_bytes() == before
    # The resume under the same launcher ends as an uninterrupted run does.
    run(launcher, [*args, "--resume"])
    run(launcher, [*ARGS, "--out", str(tmp_path), "--run-id", "ref"])
    assert run_status(run_dir)["status"] == "done"
    assert metric_rows(run_dir) == metric_rows(tmp_path / "ref")
    a, b = load_ckpt(run_dir), load_ckpt(tmp_path / "ref")
    import torch
    for r in (0, 1):
        assert torch.equal(a["ranks"][r]["flat"], b["ranks"][r]["flat"]), f"rank {r}"


def job_processes_safe(pid: int) -> list[psutil.Process]:
    try:
        return job_processes(pid)
    except psutil.NoSuchProcess:
        return []
