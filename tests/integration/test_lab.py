"""The lab (issue 12): network namespaces on a bridge with shaped links and an sshd each, and real
`horovodrun -H` jobs across them: equal to one node, a cut link, a node without sshd.

Needs root and network namespaces (CI has both). Without them every test here is reported as
skipped with the reason (pytest -ra prints it); none passes silently.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, horovodrun, load_ckpt, metric_rows, run_status, subprocess_env
from prsgd.lab import cli as lab_mod

pytestmark = pytest.mark.horovod
REASON = lab_mod.unavailable_reason()
GLOO_TIMEOUT = 10     # seconds a collective may wait on a dead link (horovodrun flag)
CUT_BOUND = GLOO_TIMEOUT + 50   # documented bound: the job has exited this long after the cut
# fp64 ResNet20: 2 workers x 32-image shards / batch 8 = 4 steps per epoch, a round every 3
# steps: after 8 steps the two workers' models differ (a check that both were compared).
TINY = ["-m", "prsgd.train", "--preset", "smoke", "--dataset", "synthetic", "--train-subset", "64",
        "--test-subset", "32", "--batch-size", "8", "--epochs", "2", "--interval", "3",
        "--seed", "11", "--precision", "fp64", "--progress", "false"]
# The link-cut run: logistic regression (cheap steps), 12 epochs of 32 steps, a round every 5
# steps: most of the run is still ahead when the link is cut after the first epoch, and after
# 384 steps the workers' models differ, so the resume must restore each of them.
LONG = ["-m", "prsgd.train", "--model", "logreg", "--dataset", "synthetic_logreg", "--augment",
        "false", "--train-subset", "1024", "--test-subset", "64", "--batch-size", "16",
        "--epochs", "12", "--interval", "5", "--lr", "0.5", "--lr-milestones", "8", "--seed", "11",
        "--precision", "fp64", "--progress", "false"]


def lab_cli(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "prsgd.lab", *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"prsgd.lab {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def lab():
    if REASON:
        print(f"lab tests not run: {REASON}")
        pytest.skip(f"lab tests not run: {REASON}")
    name = f"t{os.getpid() % 100000}"
    lab_cli("up", "--name", name, "--nodes", "2", "--slots", "1", "--cpus-per-node", "1",
            "--rate", "100mbit")
    try:
        yield lab_mod.Lab.load(name)
    finally:
        lab_cli("down", "--name", name)
    assert not lab_mod.lab_namespaces(name) and not lab_mod.lab_links(name)
    assert not (lab_mod.state_root() / name).exists()


def in_launcher(lab, cmd: list[str], **kw):
    return subprocess.Popen([*lab_mod.launcher_prefix(lab), *cmd], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=ROOT, **kw)


def hvd_on_lab(lab, args: list[str], extra: list[str] = ()) -> list[str]:
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    return [exe, "-np", "2", "-H", lab.host_list(), "--gloo", "--network-interface",
            lab_mod.IFACE, "--gloo-timeout-seconds", str(GLOO_TIMEOUT), *extra,
            sys.executable, *args]


def run_on_lab(lab, args, timeout=300) -> str:
    proc = in_launcher(lab, hvd_on_lab(lab, args))
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def resume_equals_reference(lab, args, run_dir: Path, reference: Path) -> None:
    """`--resume` of the stopped run on the lab ends `done`, bit-identical to the uninterrupted
    reference run (every rank's flat buffer, every metric row)."""
    run_on_lab(lab, [*args, "--resume"])
    a, b = load_ckpt(run_dir), load_ckpt(reference)
    for r in (0, 1):
        assert torch.equal(a["ranks"][r]["flat"], b["ranks"][r]["flat"]), f"rank {r}"
    assert metric_rows(run_dir) == metric_rows(reference)
    assert run_status(run_dir)["status"] == "done"


@pytest.fixture(scope="module")
def lab_reference(lab, tmp_path_factory) -> Path:
    """An uninterrupted 2-node LONG run: one rank on each node, over the shaped link."""
    out = tmp_path_factory.mktemp("labref")
    run_on_lab(lab, [*LONG, "--out", str(out), "--run-id", "ref"])
    return out / "ref"


def test_nodes_have_own_hostname_cpus_and_shaped_links(lab):
    hosts, cpus = set(), []
    for host in lab.hosts:
        proc = in_launcher(lab, ["ssh", host,
                                 "hostname; taskset -pc $$; ip -o -4 addr show labnet"])
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        name, affinity, addr = out.strip().splitlines()
        hosts.add(name)
        cpus.append(affinity.split(":")[-1].strip())
        assert name == host and lab.address(host) + "/24" in addr
        for cmd in (["tc", "qdisc", "show", "dev", lab.veth(host)],
                    ["tc", "-n", lab.ns(host), "qdisc", "show", "dev", lab_mod.IFACE]):
            assert "tbf" in (q := subprocess.run(cmd, capture_output=True, text=True).stdout) \
                and "rate 100Mbit" in q, q
    assert len(hosts) == 2
    if os.cpu_count() >= 2:
        assert cpus[0] != cpus[1], cpus
    # The launcher has the nodes' interface name (horovodrun looks it up there) and no other.
    links = subprocess.run([*lab_mod.launcher_prefix(lab), "ip", "-o", "link"],
                           capture_output=True, text=True).stdout
    assert {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()} == \
        {"lo", lab_mod.IFACE}
    assert lab_cli("status", "--name", lab.name).returncode == 0


def test_failed_up_removes_what_it_made(lab):
    name = f"f{os.getpid() % 100000}"
    proc = lab_cli("up", "--name", name, "--burst", "0", check=False)   # tc refuses: mid-build
    assert proc.returncode != 0 and "prsgd.lab: error:" in proc.stderr and "burst" in proc.stderr
    assert not lab_mod.lab_namespaces(name) and not lab_mod.lab_links(name)
    assert not (lab_mod.state_root() / name).exists()


def test_two_nodes_equal_one_node(lab, tmp_path):
    """fp64 ResNet20: ranks on two nodes over the shaped link = both ranks on this machine's
    loopback (no lab), to 1e-9."""
    run_on_lab(lab, [*TINY, "--out", str(tmp_path), "--run-id", "lab"])
    horovodrun(2, [*TINY, "--out", str(tmp_path), "--run-id", "local"], timeout=300)
    a, b = load_ckpt(tmp_path / "lab"), load_ckpt(tmp_path / "local")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 8)
    for r in (0, 1):
        diff = (a["ranks"][r]["flat"] - b["ranks"][r]["flat"]).abs().max().item()
        assert diff <= 1e-9, f"rank {r}: max |difference| {diff}"
    assert not torch.equal(a["ranks"][0]["flat"], a["ranks"][1]["flat"])
    for ra, rb in zip(metric_rows(tmp_path / "lab"), metric_rows(tmp_path / "local"), strict=True):
        assert abs(float(ra["train_loss"]) - float(rb["train_loss"])) <= 1e-9
    meta = json.loads((tmp_path / "lab" / "config.json").read_text())
    assert meta["provenance"]["host"] == lab.hosts[0]      # rank 0 ran on node 1
    assert meta["provenance"]["world_size"] == 2


def test_cut_link_fails_within_bound_then_resume_is_bit_identical(lab, lab_reference, tmp_path):
    run_dir = tmp_path / "cut"
    args = [*LONG, "--out", str(tmp_path), "--run-id", "cut"]
    proc = in_launcher(lab, hvd_on_lab(lab, args))
    victim = lab.hosts[1]
    try:
        end = time.monotonic() + 240
        while run_status(run_dir).get("checkpoint_epoch") != 1:
            assert proc.poll() is None, f"the run ended before epoch 1:\n{proc.stdout.read()}"
            assert time.monotonic() < end, "no epoch-1 checkpoint within 240 s"
            time.sleep(0.05)
        lab_mod.set_link(lab, victim, "down")      # in-process: no interpreter start-up delay
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=CUT_BOUND + 60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        lab_cli("link", victim, "up", "--name", lab.name)
    print(f"horovodrun exited {proc.returncode} {elapsed:.1f} s after the cut "
          f"(--gloo-timeout-seconds {GLOO_TIMEOUT})")
    assert proc.returncode != 0, out[-3000:]
    assert elapsed < CUT_BOUND, f"{elapsed:.1f} s"
    st = run_status(run_dir)
    assert st["status"] == "failed" and st["epoch"] < 12, st
    assert st["message"].startswith("HorovodInternalError"), st
    # Link back: --resume finishes the run exactly as the uninterrupted one.
    resume_equals_reference(lab, args, run_dir, lab_reference)


def test_node_without_sshd_is_named_before_launch(lab, tmp_path):
    victim = lab.hosts[1]
    lab_cli("sshd", victim, "stop", "--name", lab.name)
    try:
        sweep = in_launcher(lab, [sys.executable, str(ROOT / "scripts" / "sweep.py"), "--out",
                                  str(tmp_path / "sweep"), "--np", "2", "--hosts",
                                  lab.host_list(), "--network-interface", lab_mod.IFACE,
                                  "--intervals", "2", "--data", "synthetic", "--", *TINY[2:10]])
        out, _ = sweep.communicate(timeout=120)
        assert sweep.returncode == 2, out
        assert f"cannot log in over ssh to {victim} (" in out and "Connection refused" in out, out
        assert not (tmp_path / "sweep" / "runs").exists()
        # horovodrun itself (no sweep) also stops, naming the host, instead of hanging.
        hvd = in_launcher(lab, hvd_on_lab(lab, TINY + ["--out", str(tmp_path)],
                                          ["--disable-cache"]))
        out, _ = hvd.communicate(timeout=120)
        assert hvd.returncode != 0 and f"ssh not successful for host {victim}" in out, out
    finally:
        lab_cli("sshd", victim, "start", "--name", lab.name)
    assert lab_cli("status", "--name", lab.name).returncode == 0
