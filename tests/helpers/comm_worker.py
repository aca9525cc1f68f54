"""Exercise every collective of a process backend's `Comm`, for comparing backends.

    horovodrun -np 4 --gloo python tests/helpers/comm_worker.py horovod OUT
    torchrun --standalone --nproc-per-node 4 tests/helpers/comm_worker.py torchdist OUT

Each rank starts from the same seeded data (row `rank` of a random matrix is its own), calls the
collectives in a fixed order and saves what it got to OUT/rank{r}.pt.
"""
import sys
from pathlib import Path

import torch

from prsgd.backends import make_comm
from prsgd.core.schedule import GLOBAL, LOCAL, Event, all_workers, blocks


def main():
    backend, out = sys.argv[1], Path(sys.argv[2])
    comm = make_comm(backend, dynamic_groups=True)
    r, n = comm.rank, comm.size
    groups = blocks(n, 2)
    comm.register_groups(groups)
    comm.register_groups(groups)   # idempotent, as a second run in one process does it
    g = torch.Generator().manual_seed(11)
    data = torch.randn(n, 1001, dtype=torch.float64, generator=g)
    res = {"rank": r, "size": n, "workers": list(comm.workers), "num_workers": comm.num_workers,
           "local_rank": comm.local_rank, "local_size": comm.local_size}

    x = data[r].clone()
    extra = torch.tensor([float(r), 2.0 * r], dtype=torch.float64)
    comm.average_(x, Event(LOCAL, groups), extra=extra)
    res["local"], res["local_extra"] = x.clone(), extra.clone()
    comm.average_(x, Event(GLOBAL, all_workers(n)))
    res["global"] = x.clone()
    solo = data[r].clone()
    comm.average_(solo, Event(LOCAL, tuple((w,) for w in range(n))))   # groups of one: no-op
    res["solo"] = solo
    before = data[r].clone()
    res["copy"] = comm.average_copy(before)
    res["copy_untouched"] = torch.equal(before, data[r])
    res["sum"] = comm.sum_metrics(torch.tensor([[1.0, r], [r * r, 0.5]], dtype=torch.float64))
    res["rows"] = comm.gather_rows(torch.tensor([r, 10 * r, 7], dtype=torch.int64))
    b = data[r].clone()
    comm.broadcast_(b, root=1)
    res["bcast"] = b
    res["object"] = comm.broadcast_object({"from": r, "none": None} if r == 0 else None)
    res["objects"] = comm.allgather_object({"rank": r, "t": torch.full((2,), float(r))})
    comm.barrier()
    res["counters"] = comm.counters.to_dict()
    del res["counters"]["seconds"]   # wall clock
    out.mkdir(parents=True, exist_ok=True)
    torch.save(res, out / f"rank{r}.pt")
    comm.shutdown()


if __name__ == "__main__":
    main()
