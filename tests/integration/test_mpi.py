"""Horovod under OpenMPI's mpirun: training, the sweep driver's --launcher mpirun, and the
mpi4py whole-sweep job (prsgd.experiments.mpi_sweep), each against the horovodrun --gloo runs in float64.

Needs Horovod built with MPI (scripts/install_horovod.sh does when mpicxx is on PATH) and
OpenMPI; .ci/run installs OpenMPI. Ranks talk over shared memory and loopback only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import ROOT, horovodrun, metric_frame, subprocess_env
from prsgd.launch import commands as launch

pytestmark = pytest.mark.horovod

ARGS = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "64", "--test-subset",
        "16", "--batch-size", "4", "--epochs", "2", "--lr-milestones", "1", "--precision", "fp64",
        "--checkpoint-every", "1", "--progress", "false", "--device", "cpu"]
DUMP = str(ROOT / "tests" / "helpers" / "dump_state.py")


def need_mpi():
    """mpirun and a Horovod with MPI; CI has both (.ci/run installs OpenMPI), so there a missing
    piece fails the test instead of skipping it."""
    why = None
    if launch.find_tool("mpirun") is None:
        why = "mpirun not on PATH (apt-get install openmpi-bin libopenmpi-dev)"
    else:
        probe = subprocess.run([sys.executable, "-c", "import horovod.torch as h; print(h.mpi_built())"],
                               capture_output=True, text=True, env=subprocess_env())
        if probe.stdout.strip() != "True":
            why = "Horovod built without MPI (rerun scripts/install_horovod.sh with mpicxx on PATH)"
    if why:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)


def mpirun(np_: int, args: list[str], timeout: float = 300, check: bool = True):
    cmd = [*launch.mpirun_prefix(np_), sys.executable, *args]
    p = subprocess.run(cmd, env=subprocess_env(**launch.root_env()), capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-3000:]}")
    return p


def tensors(obj, path=""):
    """Every tensor of a nested checkpoint (per-rank weights, momenta, BN statistics), by path."""
    if isinstance(obj, torch.Tensor):
        return {path: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, (list, tuple)) else ()
    return {k: v for key, sub in items for k, v in tensors(sub, f"{path}/{key}").items()}


def weights(run_dir):
    ck = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return tensors(ck["ranks"])


def hvd_record(run_dir):
    return json.loads((run_dir / "config.json").read_text())["provenance"]["comm"]["horovod_build"]


def test_mpirun_training_equals_gloo(tmp_path):
    """`mpirun -np 2 python -m prsgd.train` = `horovodrun -np 2 --gloo ...`: every worker's
    weights after steps 1, 5, 16 and the metrics, exactly (fp64); the run dir says MPI."""
    need_mpi()
    run = [*ARGS, "--interval", "3", "--out", str(tmp_path)]
    mpirun(2, [DUMP, str(tmp_path / "m.pt"), "--steps", "1,5,16", "--",
               *run, "--run-id", "m"])
    horovodrun(2, [DUMP, str(tmp_path / "g.pt"), "--steps", "1,5,16", "--",
                   *run, "--run-id", "g"], cwd=ROOT)
    for r in (0, 1):
        m = torch.load(tmp_path / f"m.rank{r}.pt")
        g = torch.load(tmp_path / f"g.rank{r}.pt")
        assert sorted(m) == [1, 5, 16]
        for step in m:
            assert torch.equal(m[step], g[step]), (r, step)
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "m"), metric_frame(tmp_path / "g"))
    assert hvd_record(tmp_path / "m")["controller"] == "mpi"
    assert hvd_record(tmp_path / "m")["allreduce_path"] == "mpi"
    assert hvd_record(tmp_path / "g")["allreduce_path"] == "gloo"
    assert hvd_record(tmp_path / "m")["built"]["mpi"] is True


def test_mpi_sweep_equals_separate_runs(tmp_path):
    """One `mpirun -np 4` job, two communicators of 2 ranks: intervals 3 and 5 train concurrently,
    each run dir equal to that interval trained alone by horovodrun -np 2 --gloo."""
    need_mpi()
    p = mpirun(4, ["-m", "prsgd.mpi_sweep", "--intervals", "3,5", "--seed", "1",
                   "--out", str(tmp_path / "job"), "--", *ARGS])
    assert "interval 3: 2 ranks, done" in p.stdout and "interval 5: 2 ranks, done" in p.stdout
    for interval in (3, 5):
        horovodrun(2, ["-m", "prsgd.train", *ARGS, "--interval", str(interval), "--seed", "1",
                       "--out", str(tmp_path / "alone"), "--run-id", f"I{interval}-s1"], cwd=ROOT)
        job = tmp_path / "job" / "runs" / f"I{interval}-s1"
        alone = tmp_path / "alone" / f"I{interval}-s1"
        pd.testing.assert_frame_equal(metric_frame(job), metric_frame(alone))
        wj, wa = weights(job), weights(alone)
        assert wj and sorted(wj) == sorted(wa)
        for k in wj:
            assert torch.equal(wj[k], wa[k]), (interval, k)
        cfg = json.loads((job / "config.json").read_text())
        assert cfg["config"]["interval"] == interval and cfg["provenance"]["world_size"] == 2
    runs = tmp_path / "job" / "runs"
    assert not metric_frame(runs / "I3-s1").equals(metric_frame(runs / "I5-s1"))
    man = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert [(r["run_id"], r["status"]) for r in man["runs"]] == [("I3-s1", "done"), ("I5-s1", "done")]


def test_mpi_sweep_rejects_uneven_split(tmp_path):
    need_mpi()
    p = mpirun(3, ["-m", "prsgd.mpi_sweep", "--intervals", "3,5", "--out", str(tmp_path / "x"),
                   "--", *ARGS], check=False)
    assert p.returncode != 0
    assert "3 ranks do not split into 2 equal groups" in p.stderr
    assert not (tmp_path / "x").exists()


def test_mpi_sweep_group_ends_as_prsgd_train_does(tmp_path):
    """A group's run that refuses its config ends as `python -m prsgd.train` would (train.exit_code):
    its one line, no traceback, exit 2 for the whole job."""
    need_mpi()
    p = mpirun(2, ["-m", "prsgd.mpi_sweep", "--intervals", "3", "--out", str(tmp_path / "x"),
                   "--", *ARGS, "--lr", "-1"], check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "prsgd.train: error: --lr" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_sweep_driver_launches_with_mpirun(tmp_path):
    need_mpi()
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "--np", "2",
                        "--launcher", "mpirun", "--intervals", "3", "--out", str(tmp_path / "s"),
                        "--", *ARGS], env=subprocess_env(), capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["spec"]["launcher"] == "mpirun" and man["runs"][0]["status"] == "done"
    assert hvd_record(tmp_path / "s" / "runs" / "I3-s0")["controller"] == "mpi"
