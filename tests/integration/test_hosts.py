"""The sweep driver's hosts (issue 12): -H / --hostfile / --network-interface reach horovodrun,
bad host lists are refused before anything runs. (Runs across real hosts: tests/test_lab.py.)"""
from __future__ import annotations

import json


from conftest import run_python
from prsgd.experiments.sweep import build_parser, spec_from_args


def spec(*argv, train=("--preset", "smoke")):
    return spec_from_args(build_parser().parse_args(["--out", "x", *argv]), list(train))


def test_unreachable_host_stops_the_sweep_before_any_run(tmp_path):
    """A host ssh cannot log in to (here a loopback address with no sshd for us: no traffic
    leaves the machine) is named, exit 2, and no run directory is made. (A stopped sshd on a
    real node: tests/test_lab.py.)"""
    out = tmp_path / "sweep"
    proc = run_python(["-m", "prsgd.experiments.sweep", "--out", str(out), "--np", "2", "--hosts",
                       "localhost:1,127.0.0.2:1", "--intervals", "2", "--data",
                       "synthetic", "--", "--preset", "smoke"], check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot log in over ssh to 127.0.0.2 (" in proc.stderr
    assert not (out / "runs").exists()


def test_manifest_records_the_launch(tmp_path):
    from prsgd.experiments.manifest import Manifest
    s = spec("--np", "2", "--hosts", "a:1,b:1", "--network-interface", "labnet")
    Manifest(tmp_path, s).save()
    launch = json.loads((tmp_path / "manifest.json").read_text())["spec"]["launch"]
    assert launch == {"hosts": "a:1,b:1", "network_interface": "labnet"}
