"""The sweep driver's hosts (issue 12): -H / --hostfile / --network-interface reach horovodrun,
bad host lists are refused before anything runs. (Runs across real hosts: tests/test_lab.py.)"""
from __future__ import annotations

import sys

import pytest

from prsgd.launch import hosts
from prsgd.experiments.spec import job_command
from prsgd.experiments.sweep import SweepError, build_parser, spec_from_args


def spec(*argv, train=("--preset", "smoke")):
    return spec_from_args(build_parser().parse_args(["--out", "x", *argv]), list(train))


def test_hosts_and_interface_reach_horovodrun(tmp_path):
    s = spec("--np", "4", "--hosts", "a:2,b:2", "--network-interface", "labnet",
             "--gloo-timeout-seconds", "30", "--horovodrun-args=--disable-cache")
    cmd = job_command(s, tmp_path, [("I4-s0", 4, 0)], resume=False)
    py = cmd.index(sys.executable)
    assert cmd[1:py] == ["-np", "4", "--gloo", "-H", "a:2,b:2", "--network-interface", "labnet",
                         "--gloo-timeout-seconds", "30", "--disable-cache"]
    assert "--hosts" not in cmd[py:]            # launcher flags never reach the trainer
    # Without hosts the command is what it always was.
    plain = job_command(spec("--np", "2"), tmp_path, [("I4-s0", 4, 0)], resume=False)
    assert plain[1:plain.index(sys.executable)] == ["-np", "2", "--gloo"]


def test_hostfile(tmp_path):
    f = tmp_path / "hosts.txt"
    f.write_text("# the lab\nlab-n1 slots=2\nlab-n2 slots=2  # second node\n\n")
    assert hosts.parse_hostfile(str(f)) == [("lab-n1", 2), ("lab-n2", 2)]
    s = spec("--np", "4", "--hostfile", str(f))
    assert s.launch["hostfile"] == str(f.resolve())
    cmd = job_command(s, tmp_path, [("I1-s0", 1, 0)], resume=False)
    assert cmd[cmd.index("--hostfile") + 1] == str(f.resolve())
    from prsgd.experiments.manifest import portable_spec     # the manifest holds no machine path
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
