"""Launch commands for Horovod ranks: `horovodrun --gloo` or OpenMPI's `mpirun`.

One place builds the mpirun prefix, so the sweep driver, the doctor, the mpi4py sweep and the
tests launch the same way. Horovod built with MPI uses its MPI controller under mpirun (no
horovodrun needed); the same command works under Slurm with `srun --mpi=pmix` in its place.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# Environment a rank needs from the launching shell; mpirun forwards only what -x names to ranks
# on other hosts (local ranks inherit everything anyway).
FORWARD = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "PYTHONUNBUFFERED", "HOROVOD_CYCLE_TIME",
           "HOROVOD_FUSION_THRESHOLD", "OMP_NUM_THREADS", "PRSGD_CACHE")


class LaunchError(RuntimeError):
    pass


def find_tool(name: str) -> str | None:
    """`name` next to this Python (a venv's horovodrun) or on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent) + os.pathsep
                        + os.environ.get("PATH", ""))


def mpirun_prefix(np_: int, *, hosts: str | None = None, loopback: bool | None = None,
                  env: dict | None = None) -> list[str]:
    """`mpirun -np N ...` for OpenMPI. `loopback` (default: when no `hosts`) keeps every byte on
    this machine: shared memory between ranks, the runtime's own TCP on `lo` only. As root,
    OpenMPI refuses to start without --allow-run-as-root (CI and containers run as root)."""
    exe = find_tool("mpirun")
    if exe is None:
        raise LaunchError("mpirun not found: install OpenMPI (apt-get install openmpi-bin "
                          "libopenmpi-dev) and rebuild Horovod with MPI (make install)")
    env = os.environ if env is None else env
    cmd = [exe, "-np", str(np_), "--oversubscribe", "--bind-to", "none"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if hosts:
        cmd += ["-H", hosts]
    if loopback if loopback is not None else not hosts:
        cmd += ["--mca", "btl", "self,vader", "--mca", "oob_tcp_if_include", "lo"]
    for k in FORWARD:
        if k in env:
            cmd += ["-x", k]
    return cmd


def horovodrun_prefix(np_: int, *, gloo: bool = True) -> list[str]:
    exe = find_tool("horovodrun")
    if exe is None:
        raise LaunchError("horovodrun not found next to this Python or on PATH; install Horovod "
                          "(make install)")
    return [exe, "-np", str(np_), *(["--gloo"] if gloo else [])]


def root_env() -> dict:
    """Variables that let mpirun start as root (also read by OpenMPI when a tool calls it)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return {}
