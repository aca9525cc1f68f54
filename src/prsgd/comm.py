"""The flat buffer that holds a model's state, and the two communicators that average it.

`FlatModel` moves every parameter, every BatchNorm running statistic and every momentum buffer
into ONE contiguous tensor, `flat = [params | BN stats | momentum]`, and makes the model's tensors
views into it. An averaging round is then one collective over `flat[:P+S]` (or all of `flat` when
momentum is averaged too), with no copies. Gradients likewise live in one flat tensor.

With a packed model (`replicas=n`) each tensor's n replica chunks are contiguous inside its
segment, so segment i is an (n, numel_i) matrix and averaging a group of replicas is a mean over
rows of every segment.

Communicators share one interface, `average_(region, event)`, plus counters; the train loop
cannot tell them apart:
- `HorovodComm`: one in-place `hvd.allreduce_(op=Average)` per round, over the group's process set.
- `PackedComm`: a mean over the replica axis, per group (replica index = config * N + worker).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .models import averaged_tensors
from .schedule import Event


class FlatModel:
    def __init__(self, model: nn.Module, replicas: int = 1):
        self.model, self.replicas = model, replicas
        named = averaged_tensors(model)
        params = [t for k, t in named if isinstance(t, nn.Parameter)]
        stats = [t for k, t in named if not isinstance(t, nn.Parameter)]
        self.names = [k for k, _ in named]
        self.num_params = sum(p.numel() for p in params)
        self.num_stats = sum(s.numel() for s in stats)
        ref = params[0]
        P, S = self.num_params, self.num_stats
        self.flat = torch.zeros(2 * P + S, device=ref.device, dtype=ref.dtype)
        self.grad = torch.zeros(P, device=ref.device, dtype=ref.dtype)
        self.segments: list[tuple[int, int]] = []   # (offset, numel) of params and stats
        off = 0
        for t in params + stats:
            n = t.numel()
            self.flat[off:off + n].copy_(t.detach().reshape(-1))
            t.data = self.flat[off:off + n].view_as(t)
            self.segments.append((off, n))
            off += n
        off = 0
        for p in params:
            p.grad = self.grad[off:off + p.numel()].view_as(p)
            off += p.numel()
        # Momentum segments mirror the parameter segments, shifted by P + S.
        self.momentum_segments = [(o + P + S, n) for o, n in self.segments[:len(params)]]

    @property
    def params(self) -> torch.Tensor:
        return self.flat[: self.num_params]

    @property
    def state(self) -> torch.Tensor:
        """Parameters and BN statistics: what every averaging round covers."""
        return self.flat[: self.num_params + self.num_stats]

    @property
    def momentum(self) -> torch.Tensor:
        return self.flat[self.num_params + self.num_stats:]

    def region(self, with_momentum: bool) -> torch.Tensor:
        return self.flat if with_momentum else self.state

    def region_segments(self, with_momentum: bool) -> list[tuple[int, int]]:
        return self.segments + (self.momentum_segments if with_momentum else [])

    def replica_mean(self, rows: slice | None = None) -> torch.Tensor:
        """Mean over replicas (all, or `rows`) of params + stats, laid out as for replicas=1."""
        n = self.replicas
        parts = [self.flat[o:o + k].view(n, -1)[rows or slice(None)].mean(0)
                 for o, k in self.segments]
        return torch.cat(parts)

    def zero_grad(self):
        self.grad.zero_()

    @torch.no_grad()
    def sgd_step(self, lr: torch.Tensor | float, momentum: float, weight_decay: float):
        """torch.optim.SGD (dampening 0, no Nesterov) on the flat buffers, replicas elementwise."""
        g, p = self.grad, self.params
        if weight_decay:
            g.add_(p, alpha=weight_decay)
        if momentum:
            self.momentum.mul_(momentum).add_(g)
            g = self.momentum
        if isinstance(lr, torch.Tensor):
            p.sub_(g * lr)
        else:
            p.add_(g, alpha=-lr)


@dataclass
class Counters:
    rounds: dict = field(default_factory=lambda: {"global": 0, "local": 0})
    bytes: dict = field(default_factory=lambda: {"global": 0, "local": 0})
    seconds: dict = field(default_factory=lambda: {"global": 0.0, "local": 0.0})

    def add(self, level: str, nbytes: int, seconds: float):
        self.rounds[level] += 1
        self.bytes[level] += nbytes
        self.seconds[level] += seconds

    def total(self, what: str):
        return sum(getattr(self, what).values())

    def to_dict(self) -> dict:
        return {"rounds": dict(self.rounds), "bytes": dict(self.bytes),
                "seconds": dict(self.seconds)}

    def load(self, d: dict):
        self.rounds, self.bytes, self.seconds = (dict(d[k]) for k in ("rounds", "bytes", "seconds"))


def _sync(t: torch.Tensor):
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


# Horovod process sets by their ranks; one Horovod (and so one set of process sets) per process.
_PROCESS_SETS: dict[tuple[int, ...], object] = {}


class HorovodComm:
    """Averaging across Horovod ranks. This process is one worker: `workers == [rank]`."""

    def __init__(self, hvd, timed: bool = True):
        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.workers = [self.rank]
        self.counters = Counters()
        self.timed = timed

    def process_set(self, group: tuple[int, ...]):
        if len(group) == self.size:
            return self.hvd.global_process_set
        return _PROCESS_SETS[group]

    def register_groups(self, groups):
        """Create the process sets a schedule will use (Hier-AVG's groups). Collective: every
        rank, in the same order. Needs Horovod initialised with dynamic process sets
        (`train.init_horovod(dynamic_process_sets=True)`). Process sets live as long as Horovod,
        so they are kept per process: a second run in the same process reuses them."""
        for g in sorted(tuple(g) for g in groups):
            if 1 < len(g) < self.size and g not in _PROCESS_SETS:
                _PROCESS_SETS[g] = self.hvd.add_process_set(list(g))

    def average_(self, region: torch.Tensor, event: Event, worker_segments=None, extra=None):
        """`extra`: a few more floats (same dtype) averaged in the SAME collective, fused with
        `region` by Horovod (diagnostics: each worker's ‖x_i − ref‖², see diagnostics.py)."""
        group = event.group_of(self.rank)
        if self.timed:
            _sync(region)
        t0 = time.perf_counter()
        if len(group) > 1 and extra is not None:
            self.hvd.grouped_allreduce_([region, extra], op=self.hvd.Average,
                                        name=f"avg.{event.level}",
                                        process_set=self.process_set(group))
        elif len(group) > 1:
            self.hvd.allreduce_(region, op=self.hvd.Average, name=f"avg.{event.level}",
                                process_set=self.process_set(group))
        if self.timed:
            _sync(region)
        nbytes = region.numel() * region.element_size() if len(group) > 1 else 0
        self.counters.add(event.level, nbytes, time.perf_counter() - t0)

    def sum_metrics(self, t: torch.Tensor) -> torch.Tensor:
        return self.hvd.allreduce(t, op=self.hvd.Sum, name="metrics")

    def average_copy(self, t: torch.Tensor) -> torch.Tensor:
        return self.hvd.allreduce(t.clone(), op=self.hvd.Average, name="eval.avg")

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's 1-d `t` (same length on all) as the rows of a (size, len) tensor."""
        return self.hvd.allgather(t.reshape(1, -1), name="gather.rows")

    def broadcast_(self, t: torch.Tensor, root: int = 0):
        self.hvd.broadcast_(t, root_rank=root, name="init.bcast")

    def broadcast_object(self, obj, root: int = 0):
        # An explicit name: the default is the type's name, which differs between ranks for None.
        return self.hvd.broadcast_object(obj, root_rank=root, name="bcast.object")

    def barrier(self):
        self.hvd.barrier()


class PackedComm:
    """Averaging across the replicas of one packed process: a mean over the replica axis.

    With `configs` C > 1 the process packs C runs of `workers` N replicas each (replica index =
    config * N + worker); each run averages only its own N replicas and has its own counters.
    """

    def __init__(self, flat_model: FlatModel, workers: int, timed: bool = True, configs: int = 1):
        self.fm = flat_model
        self.n = flat_model.replicas
        self.workers_per_config = workers
        self.workers = list(range(workers))
        self.rank, self.size = 0, 1
        self.config_counters = [Counters() for _ in range(configs)]
        self.counters = self.config_counters[0]
        self.timed = timed

    def register_groups(self, groups):
        pass

    def mean_(self, region: torch.Tensor, event: Event, config: int = 0):
        """The arithmetic of a round, nothing else (no sync, no counters): CUDA-graph capturable."""
        segments = self.fm.region_segments(region.numel() == self.fm.flat.numel())
        base = config * self.workers_per_config
        for g in event.groups:
            if len(g) < 2:
                continue
            rows = slice(base + g[0], base + g[-1] + 1)  # groups are contiguous worker ranges
            for o, k in segments:
                v = self.fm.flat[o:o + k].view(self.n, -1)
                v[rows] = v[rows].mean(0, keepdim=True)

    def count(self, region: torch.Tensor, event: Event, config: int = 0, seconds: float = 0.0):
        # What a ring allreduce of this group would move per worker, for comparable counters.
        nbytes = sum((region.numel() // self.n) * region.element_size()
                     for g in event.groups if len(g) > 1)
        self.config_counters[config].add(event.level, nbytes // max(len(event.groups), 1),
                                         seconds)

    def average_(self, region: torch.Tensor, event: Event, config: int = 0, graphs=None):
        """`graphs`: an optional `step.GraphCache` that replays a captured round instead."""
        if self.timed:
            _sync(region)
        t0 = time.perf_counter()
        if graphs is not None:
            graphs.run((config, event), lambda: self.mean_(region, event, config))
        else:
            self.mean_(region, event, config)
        if self.timed:
            _sync(region)
        self.count(region, event, config, time.perf_counter() - t0)

    def config_means(self, configs: int) -> torch.Tensor:
        """Each packed run's replica mean of params + stats, laid out as for `replicas=configs`."""
        parts = [self.fm.flat[o:o + k].view(configs, self.workers_per_config, -1).mean(1)
                 .reshape(-1) for o, k in self.fm.segments]
        return torch.cat(parts)

    def sum_metrics(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def broadcast_object(self, obj, root: int = 0):
        return obj

    def barrier(self):
        pass
