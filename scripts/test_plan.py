"""What `make test` will skip on this machine, and why, printed before the tests start.

    python scripts/test_plan.py        # one line per group of tests that will not run here

The tests skip these groups themselves (with the same reasons, `pytest -ra`); this says it up
front, so that a green run on a machine without OpenMPI, root or a GPU is not read as "all of it
ran". CI (`.ci/run`, Debian, as root) installs OpenMPI first, so there only the GPU group skips.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg"


def on_path(tool: str) -> bool:
    """`tool` next to this Python (a venv's horovodrun) or on PATH, as the tests look for it."""
    return shutil.which(tool, path=str(Path(sys.executable).parent) + os.pathsep
                        + os.environ.get("PATH", "")) is not None


def missing_mpi() -> str | None:
    if not (on_path("mpirun") and on_path("mpicxx")):
        return ("no OpenMPI (mpirun, mpicxx): tests/integration/test_mpi.py skips (fails under CI=true) "
                "(Debian: apt-get install openmpi-bin libopenmpi-dev, then rebuild Horovod)")
    if importlib.util.find_spec("horovod") is not None and not horovod_has_mpi():
        return ("Horovod was built without MPI: tests/integration/test_mpi.py skips "
                "(rerun scripts/install_horovod.sh with mpicxx on PATH)")
    return None


def horovod_has_mpi() -> bool:
    try:
        import horovod.torch as hvd
    except ImportError:     # a broken build: the Horovod tests themselves will say so
        return True
    return bool(hvd.mpi_built())


def missing_root() -> str | None:
    if os.geteuid() != 0:
        return ("not root: the lab tests (tests/integration/test_lab.py) and the full-disk "
                "test skip")
    return None


def missing_gpu() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "no torch in this Python: nothing will run (make install first)"
    import torch
    if not torch.cuda.is_available():
        return "no GPU: the CUDA-graph tests (test_fast_step.py) skip"
    return None


def missing_data() -> str | None:
    if not SHARED_DATA.exists():
        return f"no shared JPEG CIFAR-10 at {SHARED_DATA}: the tests on real images skip"
    return None


def main() -> int:
    reasons = [r for r in (missing_mpi(), missing_root(), missing_gpu(), missing_data()) if r]
    if not reasons:
        print("make test: every group of tests can run here")
    for reason in reasons:
        print(f"make test: will skip: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
