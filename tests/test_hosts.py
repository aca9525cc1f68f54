"""The sweep driver's hosts (issue 12): -H / --hostfile / --network-interface reach horovodrun,
bad host lists are refused before anything runs. (Runs across real hosts: tests/test_lab.py.)"""
from __future__ import annotations

import json
import sys

import pytest

from conftest import run_python
from prsgd import hosts
from prsgd.sweep import SweepError, build_parser, spec_from_args, train_command


def spec(*argv, train=("--preset", "smoke")):
    return spec_from_args(build_parser().parse_args(["--out", "x", *argv]), list(train))


def test_hosts_and_interface_reach_horovodrun(tmp_path):
    s = spec("--np", "4", "--hosts", "a:2,b:2", "--network-interface", "labnet",
             "--gloo-timeout-seconds", "30", "--horovodrun-args=--disable-cache")
    cmd = train_command(s, tmp_path, "I4-s0", 4, 0, resume=False)
    py = cmd.index(sys.executable)
    assert cmd[1:py] == ["-np", "4", "--gloo", "-H", "a:2,b:2", "--network-interface", "labnet",
                         "--gloo-timeout-seconds", "30", "--disable-cache"]
    assert "--hosts" not in cmd[py:]            # launcher flags never reach the trainer
    # Without hosts the command is what it always was.
    plain = train_command(spec("--np", "2"), tmp_path, "I4-s0", 4, 0, resume=False)
    assert plain[1:plain.index(sys.executable)] == ["-np", "2", "--gloo"]


def test_hostfile(tmp_path):
    f = tmp_path / "hosts.txt"
    f.write_text("# the lab\nlab-n1 slots=2\nlab-n2 slots=2  # second node\n\n")
    assert hosts.parse_hostfile(str(f)) == [("lab-n1", 2), ("lab-n2", 2)]
    s = spec("--np", "4", "--hostfile", str(f))
    assert s.launch["hostfile"] == str(f.resolve())
    cmd = train_command(s, tmp_path, "I1-s0", 1, 0, resume=False)
    assert cmd[cmd.index("--hostfile") + 1] == str(f.resolve())
    from prsgd.sweep import portable_spec     # the manifest holds no machine path
    assert portable_spec(s)["launch"]["hostfile"] == "hosts.txt"


@pytest.mark.parametrize("argv, message", [
    (["--hosts", "a:0"], "SLOTS >= 1"),
    (["--hosts", "a:x,b:2"], "expected HOST:SLOTS"),
    (["--hosts", "a:1,a:1"], "each host once"),
    (["--hosts", "a:1", "--hostfile", "h"], "exclude each other"),
    (["--hostfile", "/nonexistent/h"], "is not a file"),
    (["--gloo-timeout-seconds", "0"], "must be >= 1"),
])
def test_bad_hosts_are_refused(argv, message):
    with pytest.raises(SweepError, match=message):
        spec(*argv)


def test_more_ranks_than_slots_and_packed_hosts_are_refused():
    with pytest.raises(hosts.HostsError, match="--np 5 is more than the 4 slots"):
        hosts.check({"hosts": "localhost:4"}, 5, "horovod")
    with pytest.raises(hosts.HostsError, match="only the horovod backend"):
        hosts.check({"hosts": "localhost:4"}, 4, "packed")
    hosts.check({"hosts": "localhost:4"}, 4, "horovod")     # local: no ssh needed


def test_unreachable_host_stops_the_sweep_before_any_run(tmp_path):
    """A host ssh cannot log in to (here a loopback address with no sshd for us: no traffic
    leaves the machine) is named, exit 2, and no run directory is made. (A stopped sshd on a
    real node: tests/test_lab.py.)"""
    out = tmp_path / "sweep"
    proc = run_python(["-m", "prsgd.sweep", "--out", str(out), "--np", "2", "--hosts",
                       "localhost:1,127.0.0.2:1", "--intervals", "2", "--data",
                       "synthetic", "--", "--preset", "smoke"], check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot log in over ssh to 127.0.0.2 (" in proc.stderr
    assert not (out / "runs").exists()


def test_manifest_records_the_launch(tmp_path):
    from prsgd.sweep import Manifest
    s = spec("--np", "2", "--hosts", "a:1,b:1", "--network-interface", "labnet")
    Manifest(tmp_path, s).save()
    launch = json.loads((tmp_path / "manifest.json").read_text())["spec"]["launch"]
    assert launch == {"hosts": "a:1,b:1", "network_interface": "labnet"}
