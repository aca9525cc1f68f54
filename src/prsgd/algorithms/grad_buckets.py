"""Bucketed gradient allreduce overlapped with backward, as torch DDP and Horovod's
DistributedOptimizer do it (`--algorithm gradient_allreduce --bucket-mb MB`).

Buckets (DDP's `compute_bucket_assignment_by_size`, torch/csrc/distributed/c10d/reducer.cpp;
design note https://pytorch.org/docs/stable/notes/ddp.html; Li et al., "PyTorch Distributed",
VLDB 2020, Sec. 3.2.3): the parameters are taken in REVERSE order of `model.parameters()`, the
order in which backward roughly produces their gradients, and appended to the open bucket; the
bucket closes as soon as it holds >= MB megabytes (MiB, as DDP's bucket_cap_mb) of one worker's
gradient, so every bucket but the last is at least the cap. DDP gives its first bucket a smaller
cap (1 MiB); we do not. Because the flat gradient `fm.grad` holds the parameters in order, a
bucket of consecutive parameters is one contiguous slice of it: no copy in or out.

Overlap: a hook on each parameter (`Tensor.register_post_accumulate_grad_hook`) fires once its
gradient is final; when every parameter of a bucket has fired, the bucket is ready. As in DDP
("always running allreduce in the bucket index order instead of actual bucket ready order"),
a ready bucket is started only after every bucket before it, so every rank issues the same
collectives in the same order. After backward, `finish` starts whatever was not started (a
parameter without a gradient this step: its hook never fires) and waits for all, before the
SGD update. The averaged numbers are the plain variant's: elementwise the same mean.

The hooks need the run's communicator, which the algorithm first sees in `on_gradients`: the
first step of a process starts all its buckets after backward (same arithmetic, no overlap).
"""
from __future__ import annotations

MIB = 1 << 20


def assign_buckets(nbytes: list[int], cap_bytes: float) -> list[list[int]]:
    """Parameter indices per bucket, in launch order: reverse parameter order, a bucket closed
    when it reaches `cap_bytes` (DDP's rule). `nbytes`: each parameter's gradient bytes."""
    buckets, current, size = [], [], 0
    for i in reversed(range(len(nbytes))):
        current.append(i)
        size += nbytes[i]
        if size >= cap_bytes:
            buckets.append(current)
            current, size = [], 0
    if current:
        buckets.append(current)
    return buckets


class GradBuckets:
    """The buckets of one flat model and the hooks that start them during backward."""

    def __init__(self, fm, cap_mb: float):
        self.fm = fm
        segments = fm.segments[:len(fm.momentum_segments)]         # parameters, in flat order
        per_worker = [k // fm.replicas * fm.grad.element_size() for _, k in segments]
        self.buckets = assign_buckets(per_worker, cap_mb * MIB)
        # Each bucket's slice [lo, hi) of fm.grad: its parameters are consecutive.
        self.slices = [(segments[b[-1]][0], segments[b[0]][0] + segments[b[0]][1])
                       for b in self.buckets]
        self.bucket_of = {i: j for j, b in enumerate(self.buckets) for i in b}
        self.comm = None
        self._reset()
        params = list(fm.model.parameters())
        for i, p in enumerate(params):
            o, k = segments[i]
            assert p.grad is not None and p.grad.data_ptr() == fm.grad[o:o + k].data_ptr(), \
                "parameter order differs from the flat buffer's"
            p.register_post_accumulate_grad_hook(lambda _p, i=i: self._ready(i))

    def __len__(self) -> int:
        return len(self.buckets)

    def bucket_bytes(self) -> list[int]:
        """One worker's bytes per bucket, in launch order."""
        per = self.fm.grad.element_size() / self.fm.replicas
        return [int((hi - lo) * per) for lo, hi in self.slices]

    def _reset(self) -> None:
        self.missing = [len(b) for b in self.buckets]   # parameters not ready yet, per bucket
        self.started: list = []                          # handles, in bucket order

    def _ready(self, i: int) -> None:
        """Parameter i's gradient is final (a hook, inside backward)."""
        self.missing[self.bucket_of[i]] -= 1
        if self.comm is not None:
            self._start(ready_only=True)

    def _start(self, ready_only: bool) -> None:
        """Start the next buckets in order: those ready (during backward), or all (after it)."""
        while len(self.started) < len(self.buckets):
            j = len(self.started)
            if ready_only and self.missing[j] > 0:
                return
            self.started.append(self.comm.start_grad_bucket(*self.slices[j]))

    def finish(self, comm) -> None:
        """After backward: start what is left, wait for every bucket, count one round."""
        self.comm = comm
        self._start(ready_only=False)
        handles = self.started
        self._reset()
        comm.finish_grad_buckets(handles)
