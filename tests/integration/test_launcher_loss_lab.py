"""No rank outlives its launcher, on the lab (issue 21 §4): a node's link is cut mid-run under
Gloo's default timeout (30 s), so horovodrun gives the job up before the ranks' collectives do;
the link is held down, then restored. Every rank is gone within the documented bound after
horovodrun exited, the run never reports `done` (or stays `running`), nothing writes after, and
a resume ends bit-identical to an uninterrupted run.

Where the bound comes from: the rank on the reachable node sees its sshd session end when
horovodrun's ssh client exits; the rank on the cut node sees it when that node's sshd gives the
silent client up (ClientAliveInterval x ClientAliveCountMax of the lab's sshd_config). Either
rank then stops within the watchdog's BOUND_S. Needs root and network namespaces (as test_lab)."""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import run_status, subprocess_env, wait_for
from integration.test_lab import (LONG, in_launcher, lab, lab_reference,  # noqa: F401
                                  resume_equals_reference)  # lab, lab_reference: fixtures
from prsgd.lab import cli as lab_mod
from prsgd.launch.watchdog import BOUND_S

pytestmark = pytest.mark.horovod
EXIT_S = 3.0
HOLD_S = 5.0        # the link stays down this long after horovodrun exited, then comes back


def client_alive_s(lab) -> float:
    """How long the lab's sshd waits for a silent client (from the config it runs with)."""
    text = (Path(lab.dir) / f"{lab.hosts[0]}.sshd_config").read_text()
    every, count = (int(re.search(rf"^{k} (\d+)", text, re.M).group(1))
                    for k in ("ClientAliveInterval", "ClientAliveCountMax"))
    return every * count


def rank_processes(marker: str) -> list[int]:
    """pids of the trainers whose command line holds `marker` (the run's own --out). (ssh and
    the remote shells carry the trainer's command as one string, not as its own words.)"""
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0") if d.name.isdigit() else []
        except OSError:
            continue
        if b"prsgd.train" in cmd and marker.encode() in cmd \
                and not any(b"horovodrun" in c for c in cmd[:2]):     # not the launcher
            out.append(int(d.name))
    return out


def test_cut_link_then_restored_leaves_no_rank_and_no_late_done(lab, lab_reference, tmp_path):
    run_dir = tmp_path / "cut"
    args = [*LONG, "--out", str(tmp_path), "--run-id", "cut"]
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    # Gloo's default timeout (no --gloo-timeout-seconds): horovodrun gives up first.
    proc = in_launcher(lab, [exe, "-np", "2", "-H", lab.host_list(), "--gloo",
                             "--network-interface", lab_mod.IFACE, sys.executable, *args])
    victim = lab.hosts[1]
    restored = False
    try:
        wait_for(lambda: run_status(run_dir).get("checkpoint_epoch") == 1, 240, "epoch 1", proc)
        assert len(rank_processes(str(tmp_path))) == 2
        lab_mod.set_link(lab, victim, "down")
        t_cut = time.monotonic()
        out, _ = proc.communicate(timeout=300)
        t_exit = time.monotonic()
        time.sleep(HOLD_S)
        lab_mod.set_link(lab, victim, "up")
        restored = True
        bound = client_alive_s(lab) + BOUND_S + EXIT_S
        while rank_processes(str(tmp_path)) and time.monotonic() - t_exit < bound + 60:
            time.sleep(0.2)
        gone_after = time.monotonic() - t_exit
        left = rank_processes(str(tmp_path))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        if not restored:
            lab_mod.set_link(lab, victim, "up")
        for pid in rank_processes(str(tmp_path)):
            os.kill(pid, 9)
    print(f"horovodrun exited {proc.returncode} {t_exit - t_cut:.1f} s after the cut; the last "
          f"rank was gone {gone_after:.1f} s after horovodrun (bound {bound:g} s)")
    assert proc.returncode != 0, out[-3000:]
    assert not left and gone_after < bound, (left, gone_after)
    st = run_status(run_dir)
    print(f"status.json: {st.get('status')}: {st.get('message')}")
    assert st["status"] in ("interrupted", "failed") and st["epoch"] < 12, st
    before = (run_dir / "status.json").read_bytes()
    time.sleep(2 * HOLD_S)        # the link is back: an orphan would now go on and write
    assert (run_dir / "status.json").read_bytes() == before
    resume_equals_reference(lab, args, run_dir, lab_reference)
