"""One live owner per run directory and per sweep directory (issue 14), with real processes.

- Two trainers against one run directory: the second is refused, naming the first's PID, and
  the first finishes undisturbed. The lock dies with its holder: after SIGKILL of the owner the
  directory can be owned again at once.
- A sweep driver killed with SIGKILL mid-run: its run ends too (no orphan), and rerunning the
  same command finishes every run, identical to an uninterrupted sweep.
- Two drivers on one sweep directory: the second is refused.
- SIGTERM to the driver: it ends its run and exits 143 (SIGINT: 130).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, WALL_CLOCK, run_status, subprocess_env, wait_for
from prsgd.records import ownership

# Packed runs of 2 workers: 128 images, batch 8 -> 8 steps per epoch, a few seconds per epoch.
TRAIN = ["--preset", "smoke", "--train-subset", "128", "--test-subset", "32", "--batch-size", "8",
         "--epochs", "3", "--device", "cpu"]


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line holds `text` (e.g. a test's unique temporary path)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            out.append((int(d.name), cmd))
    return out


# --- run directories ------------------------------------------------------------------------------
def test_two_owners_of_one_run_dir_the_second_is_refused(tmp_path):
    cmd = [sys.executable, "-m", "prsgd.train", *TRAIN, "--backend", "packed", "--workers", "2",
           "--epochs", "30", "--checkpoint-every", "1", "--out", str(tmp_path), "--run-id", "r"]
    env = subprocess_env(PRSGD_CACHE=tmp_path / "cache")
    first = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        wait_for(lambda: run_status(tmp_path / "r").get("checkpoint_epoch"), 600, "epoch 1", first)
        # A second trainer on the live run (the way to lose it: --resume, or --restart).
        for flag in ("--resume", "--restart"):
            p = subprocess.run([*cmd, flag], env=env, text=True, capture_output=True,
                               timeout=300)
            assert p.returncode == 2, p.stderr
            assert f"is in use by a live process: pid {first.pid}" in p.stderr, p.stderr
            assert "Traceback" not in p.stderr
        assert first.poll() is None                          # the owner runs on, undisturbed
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert run_status(tmp_path / "r")["status"] == "interrupted"
    assert not (tmp_path / "r" / ownership.OWNER_FILE).exists()   # let go at the end


def test_the_lock_dies_with_its_holder(tmp_path):
    code = ("import sys, time; from prsgd.records import ownership; ownership.acquire(sys.argv[1]); "
            "print('owned', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d")],
                              env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "owned"
        assert ownership.holder(tmp_path / "d")["pid"] == holder.pid
        with pytest.raises(ownership.OwnedElsewhere, match=f"pid {holder.pid}"):
            ownership.acquire(tmp_path / "d")
    finally:
        holder.kill()                                        # SIGKILL: no clean-up runs
        holder.wait()
    assert (tmp_path / "d" / ownership.OWNER_FILE).exists()  # stale file, no live lock
    assert ownership.holder(tmp_path / "d") is None
    with ownership.acquire(tmp_path / "d") as mine:
        assert ownership.holder(tmp_path / "d") is None or mine.fd >= 0
    assert not (tmp_path / "d" / ownership.OWNER_FILE).exists()


# --- sweep directories ----------------------------------------------------------------------------
def sweep_cmd(out: Path, backend: str) -> list[str]:
    extra = ["--backend", "packed"] if backend == "packed" else []
    return [sys.executable, str(ROOT / "scripts" / "sweep.py"), "--out", str(out), "--data",
            "synthetic", "--np", "2", "--intervals", "2,4", *extra, "--", *TRAIN]


def metrics(sweep_dir: Path) -> dict[str, pd.DataFrame]:
    return {d.name: pd.read_csv(d / "metrics.csv").drop(columns=WALL_CLOCK)
            for d in sorted((sweep_dir / "runs").iterdir())}


def start(cmd, tmp_path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=subprocess_env(PRSGD_CACHE=tmp_path / "cache"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("backend", ["packed", pytest.param("horovod",
                                                            marks=pytest.mark.horovod)])
def test_sigkill_of_the_sweep_driver_leaves_no_orphan_and_a_rerun_finishes(tmp_path, backend):
    env = subprocess_env(PRSGD_CACHE=tmp_path / "cache")
    whole = tmp_path / "whole"
    subprocess.run(sweep_cmd(whole, backend), env=env, check=True, capture_output=True,
                   timeout=900)

    cut = tmp_path / "cut"
    driver = start(sweep_cmd(cut, backend), tmp_path)
    try:   # killed in the middle of the first run, after its first checkpoint
        wait_for(lambda: run_status(cut / "runs" / "I2-s0").get("checkpoint_epoch"), 300,
                 "the first run's epoch 1", driver)
        assert processes_mentioning(str(cut / "runs"))          # the run is alive
        driver.kill()
        driver.wait()
        # No orphan: the run's launcher and ranks end with the driver (they get SIGTERM).
        wait_for(lambda: not processes_mentioning(str(cut / "runs")), 60, "the orphans' end")
    finally:
        for pid, _ in processes_mentioning(str(cut)):
            os.kill(pid, signal.SIGKILL)
    assert run_status(cut / "runs" / "I2-s0")["status"] == "interrupted"

    # The same command again: every run done, the interrupted one resumed, as if never killed.
    p = subprocess.run(sweep_cmd(cut, backend), env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    runs = {r["run_id"]: r for r in json.loads((cut / "manifest.json").read_text())["runs"]}
    assert {k: r["status"] for k, r in runs.items()} == {"I2-s0": "done", "I4-s0": "done"}
    assert runs["I2-s0"]["resumed"] is True
    a, b = metrics(whole), metrics(cut)
    assert a.keys() == b.keys() == {"I2-s0", "I4-s0"}
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k])
    assert not processes_mentioning(str(cut))


def test_two_drivers_on_one_sweep_dir_the_second_is_refused(tmp_path):
    out = tmp_path / "sw"
    first = start(sweep_cmd(out, "packed"), tmp_path)
    try:
        wait_for(lambda: (out / "manifest.json").exists(), 120, "the first driver", first)
        p = subprocess.run(sweep_cmd(out, "packed"), env=subprocess_env(), text=True,
                           capture_output=True, timeout=120)
        assert p.returncode == 2
        assert f"is in use by a live process: pid {first.pid}" in p.stderr, p.stderr
    finally:
        first.kill()
        first.wait()
        wait_for(lambda: not processes_mentioning(str(out)), 60, "the run's end")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_sweep_driver_exits_128_plus_the_signal(tmp_path, sig):
    out = tmp_path / "sw"
    driver = start(sweep_cmd(out, "packed"), tmp_path)
    try:
        wait_for(lambda: run_status(out / "runs" / "I2-s0").get("status") == "running", 240,
                 "the first run", driver)
        driver.send_signal(sig)
        driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 128 + sig
    assert run_status(out / "runs" / "I2-s0")["status"] == "interrupted"
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert runs[0]["status"] == "interrupted"
    assert not processes_mentioning(str(out))
