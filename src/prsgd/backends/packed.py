"""Packed: every worker is a replica of one packed model in THIS process; a round is a mean over
the replica axis of each tensor's segment (`comm.FlatModel`: segment i is an (n, numel_i) matrix).

A packed sweep holds C runs of N workers each (replica = run * N + worker). `view(run)` is the
communicator of one run: it averages only that run's N replicas and has its own counters, so a
run cannot tell whether it is packed alone or with others. The packed backend equals real ranks
in fp64 (tests/test_packed_equivalence.py).
"""
from __future__ import annotations

import sys
import time

import torch

from prsgd.core.errors import ConfigError
from prsgd.core.schedule import GLOBAL, Event
from .base import Comm, Counters, InFlight

# config.json's `derived` key under which a packed sweep records the runs that shared a process.
PACKED_RUNS = "packed"


class PackedComm(Comm):
    """`PackedComm(fm, N)`: one run of N replicas; `PackedComm(fm, N, runs=C)` a packed sweep
    (this object is run 0's view; `view(c)` the others)."""

    name = "packed"
    holds_all_workers = True
    times_rounds = False     # replicas average in memory: no communication to measure

    @classmethod
    def validate_config(cls, cfg, world_size: int | None) -> None:
        if cfg.slowdown:
            raise ConfigError("--slowdown: needs the horovod backend (packed replicas share "
                              "one process)")

    @classmethod
    def run_workers(cls, cfg, world_size: int | None) -> int:
        return cfg.workers

    @classmethod
    def train_flags(cls, workers: int) -> list[str]:
        return ["--backend", cls.name, "--workers", str(workers)]

    @classmethod
    def command(cls, spec, args: list[str]) -> list[str]:
        if spec.launch:
            raise ValueError("--hosts/--hostfile: only the horovod backend runs on several hosts")
        return [sys.executable, *args, *cls.train_flags(spec.np)]

    def __init__(self, fm=None, workers: int = 1, timed: bool = True, runs: int = 1,
                 graphs=None, configs: int | None = None):
        self.num_workers = workers
        self.workers = list(range(workers))
        self.rank, self.size, self.local_rank, self.local_size = 0, 1, 0, 1
        self.counters = Counters()
        self.timed = timed
        self.run = 0
        self.graphs = graphs      # step.GraphCache: replay captured rounds (--cuda-graph)
        self._views = {0: self}
        if fm is not None:
            self.attach(fm, configs or runs)

    @classmethod
    def launch(cls, *, workers: int = 0, dynamic_groups: bool = False, device_type: str = "cpu",
               comm=None) -> "PackedComm":
        if workers <= 0:
            raise ValueError("the packed backend needs the number of workers")
        return cls(None, workers)

    def attach(self, fm, runs: int = 1) -> None:
        if fm.replicas != runs * self.num_workers:
            raise ValueError(f"packed: {fm.replicas} replicas are not {runs} runs of "
                             f"{self.num_workers} workers")
        for v in self._views.values():
            v.fm, v.runs, v.n = fm, runs, fm.replicas

    def view(self, run: int) -> "PackedComm":
        if run not in self._views:
            if not 0 <= run < self.runs:
                raise ValueError(f"packed: no run {run} of {self.runs}")
            v = PackedComm(None, self.num_workers, self.timed, graphs=self.graphs)
            v.fm, v.runs, v.n, v.run, v._views = self.fm, self.runs, self.n, run, self._views
            self._views[run] = v
        return self._views[run]

    def set_graphs(self, graphs) -> None:
        for v in self._views.values():
            v.graphs = graphs
        self.graphs = graphs

    # --- the arithmetic --------------------------------------------------------------------------
    def _segments(self, region: torch.Tensor) -> list[tuple[int, int]]:
        """[(offset, numel)] of the tensors `region` covers, as offsets into `region` itself: every
        region starts where its buffer does, so this holds for the flat model's regions and for a
        snapshot of one (an overlapped round averages a copy)."""
        fm = self.fm
        if region.data_ptr() == fm.grad.data_ptr():
            return fm.segments[:len(fm.momentum_segments)]
        if region.numel() == fm.flat.numel():
            return fm.region_segments(True)
        if region.numel() == fm.num_params + fm.num_stats:
            return fm.segments
        if region.numel() == fm.num_params:
            return fm.segments[:len(fm.momentum_segments)]
        raise ValueError("packed: region must be the flat model's params, state, flat or grad")

    def _rows(self, group) -> slice:
        base = self.run * self.num_workers   # groups are contiguous worker ranges
        return slice(base + group[0], base + group[-1] + 1)

    def mean_(self, region: torch.Tensor, event: Event, extra: torch.Tensor | None = None):
        """The arithmetic of a round, nothing else (no sync, no counters): CUDA-graph capturable."""
        segments = self._segments(region)
        for g in event.groups:
            if len(g) < 2:
                continue
            rows = self._rows(g)
            for o, k in segments:
                v = region[o:o + k].view(self.n, -1)
                v[rows] = v[rows].mean(0, keepdim=True)
            if extra is not None:
                e = extra[g[0]:g[-1] + 1]
                e.copy_(e.mean(0, keepdim=True).expand_as(e))

    def count(self, region: torch.Tensor, event: Event, seconds: float = 0.0):
        # What a ring allreduce of this group would move per worker, for comparable counters.
        nbytes = sum((region.numel() // self.n) * region.element_size()
                     for g in event.groups if len(g) > 1)
        self.counters.add(event.level, nbytes // max(len(event.groups), 1), seconds)

    # --- Comm ------------------------------------------------------------------------------------
    def average_(self, region: torch.Tensor, event: Event, extra: torch.Tensor | None = None):
        if self.graphs is not None and extra is None:
            fn = lambda: self.graphs.run((self.run, region.numel(), event),
                                         lambda: self.mean_(region, event))
        else:
            fn = lambda: self.mean_(region, event, extra)
        self.count(region, event, self._timed(region, fn))

    def replica_rows(self) -> slice:
        return self._rows(self.workers)

    def average_rows_(self, t: torch.Tensor, event: Event) -> None:
        """Rows are this run's workers (row w = worker w): each group's rows become their mean,
        computed once in `t`'s dtype (torch's reduction) and copied to every row of the group."""
        for g in event.groups:
            if len(g) > 1:
                rows = t[g[0]:g[-1] + 1]
                rows.copy_(rows.mean(0, keepdim=True).expand_as(rows))

    def start_grad_bucket(self, lo: int, hi: int):
        """The bucket's mean over this run's replica rows, done at once: replicas share one
        process and one backward, so nothing overlaps here (the mean runs inside backward's
        hooks, in the same order as on real ranks). Returns (seconds, bytes per worker)."""
        fm, rows = self.fm, self._rows(self.workers)
        segments = [(o, k) for o, k in fm.segments[:len(fm.momentum_segments)]
                    if lo <= o and o + k <= hi]

        def mean():
            for o, k in segments:
                v = fm.grad[o:o + k].view(self.n, -1)
                v[rows] = v[rows].mean(0, keepdim=True)

        t0 = time.perf_counter()   # no device sync inside backward: on a GPU, launch time only
        if self.num_workers > 1:
            mean()
        return time.perf_counter() - t0, (hi - lo) // self.n * fm.grad.element_size()

    def finish_grad_buckets(self, handles: list) -> None:
        nbytes = sum(b for _, b in handles) if self.num_workers > 1 else 0
        self.counters.add(GLOBAL, nbytes, sum(s for s, _ in handles))

    def average_start(self, buf: torch.Tensor, event: Event) -> InFlight:
        """The replicas are in memory: the mean is taken now, "in flight" until the wait."""
        self.mean_(buf, event)
        return InFlight(buf, event)

    def average_wait(self, handle: InFlight) -> None:
        if not handle.done:   # nothing to wait for: the round is counted with 0 s
            handle.done = True
            self.count(handle.buf, handle.event)

    def average_rows_start(self, t: torch.Tensor, event: Event, tag: str = "") -> InFlight:
        """In memory: averaged now, "in flight" until the wait (which has nothing to do)."""
        self.average_rows_(t, event)
        return InFlight(t, event, done=True)

    def gather_start(self, t: torch.Tensor) -> InFlight:
        return InFlight(t, None, self.gather_rows(t), done=True)

    def own_rows(self, t: torch.Tensor) -> list[torch.Tensor]:
        """This run's replica rows of every segment of `t` (views)."""
        rows = self._rows(self.workers)
        return [t[o:o + k].view(self.n, -1)[rows] for o, k in self._segments(t)]

    def average_copy(self, region: torch.Tensor) -> torch.Tensor:
        segments = self._segments(region)
        rows = self._rows(self.workers)
        return torch.cat([region[o:o + k].view(self.n, -1)[rows].mean(0) for o, k in segments])

    def sum_metrics(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(len(self.workers), -1) if t.dim() == 1 else t

    def broadcast_(self, t: torch.Tensor, root: int = 0) -> None:
        pass

    def broadcast_object(self, obj, root: int = 0):
        return obj

    def allgather_object(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass
