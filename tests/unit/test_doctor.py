"""`python -m prsgd.doctor`: the allreduce-path decision, and the real 2-rank check it launches."""
from __future__ import annotations


import pytest

from prsgd.backends.horovod import allreduce_path
from prsgd.install.doctor import rank_reports


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


def test_rank_reports_survive_joined_lines():
    """mpirun may forward two ranks' lines as one: both reports are still read."""
    a, b = '{"rank": 0, "ok": true}', '{"rank": 1, "ok": true}'
    assert rank_reports(f"noise\nDOCTOR {a}\nDOCTOR {b}\n") == [{"rank": 0, "ok": True},
                                                                   {"rank": 1, "ok": True}]
    assert [r["rank"] for r in rank_reports(f"DOCTOR {a}DOCTOR {b}\n")] == [0, 1]
    assert rank_reports("[1,0]<stdout>:DOCTOR " + a + "\n") == [{"rank": 0, "ok": True}]
