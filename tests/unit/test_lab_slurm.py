"""prsgd.lab.slurm without a cluster: the slurm.conf it writes, and its one-line refusal when
Slurm is missing and may not be installed (the cluster itself: tests/integration/test_slurm.py)."""
from __future__ import annotations

import pytest

from prsgd.lab import slurm
from prsgd.lab.network import Lab, LabError


def test_conf_names_the_lab_nodes_and_the_lab_munge_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("PRSGD_LAB_DIR", str(tmp_path))
    monkeypatch.setattr(slurm, "plugin_dir", lambda: tmp_path / "plugins")
    lab = Lab("cx", nodes=2, slots=3, cpus_per_node=1)
    slurm.slurm_dir(lab).mkdir(parents=True)
    slurm.write_conf(lab)
    conf = slurm.conf_path(lab).read_text()
    d = tmp_path / "cx" / "slurm"
    for line in ("SlurmctldHost=cx-launch(198.18.0.1)", f"AuthInfo=socket={d}/munge.socket",
                 "NodeName=cx-n1 NodeAddr=198.18.0.11 CPUs=3 State=UNKNOWN",
                 "NodeName=cx-n2 NodeAddr=198.18.0.12 CPUs=3 State=UNKNOWN",
                 "PartitionName=lab Nodes=cx-n1,cx-n2 Default=YES", f"SlurmdSpoolDir={d}/spool-%n",
                 "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                 "SlurmdParameters=config_overrides", "EnforcePartLimits=ALL",
                 f"KillWait={slurm.KILL_WAIT}", f"SlurmdTimeout={slurm.SLURMD_TIMEOUT}"):
        assert any(row.startswith(line) for row in conf.splitlines()), line
    assert slurm.env(lab)["SLURM_CONF"] == str(d / "slurm.conf")


def test_missing_slurm_is_refused_in_one_line_when_it_may_not_be_installed(monkeypatch):
    monkeypatch.setattr(slurm, "missing", lambda: ["/usr/sbin/slurmctld", "srun"])
    with pytest.raises(LabError) as e:
        slurm.ensure_slurm(install=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == ("Slurm missing (/usr/sbin/slurmctld, srun): apt-get install slurm-wlm munge "
                   "libpmix2")


def test_nothing_to_stop_without_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("PRSGD_LAB_DIR", str(tmp_path))
    lab = Lab("cy")
    assert slurm.stop(lab) == []
    ok, lines = slurm.status(lab)
    assert ok and "not started" in lines[0]
