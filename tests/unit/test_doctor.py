"""`python -m prsgd.doctor`: the allreduce-path decision, and the real 2-rank check it launches."""
from __future__ import annotations


import pytest

from prsgd.backends.horovod import allreduce_path


@pytest.mark.parametrize("built,device,ctrl,path", [
    ({"gloo": True, "mpi": False, "nccl": True}, "cuda", "gloo", "nccl"),
    ({"gloo": True, "mpi": True, "nccl": False}, "cuda", "gloo", "cpu-staging-gloo"),
    ({"gloo": True, "mpi": True, "nccl": False}, "cuda", "mpi", "cpu-staging-mpi"),
    ({"gloo": True, "mpi": True, "nccl": True}, "cpu", "mpi", "mpi"),
    ({"gloo": True, "mpi": False, "nccl": False}, "cpu", None, "gloo"),
    ({"gloo": False, "mpi": True, "nccl": False}, "cuda", None, "cpu-staging-mpi"),
])
def test_allreduce_path(built, device, ctrl, path):
    assert allreduce_path(built, device, ctrl) == path
