"""torch.distributed: one worker per process, launched by `torchrun`; for boxes where Horovod will
not build. Horovod stays the main path; this backend equals it in fp64 (tests/test_torchdist.py).

    torchrun --standalone --nproc-per-node 2 -m prsgd.train --backend torchdist ...

- Sizes come from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
  MASTER_ADDR, MASTER_PORT); without it `launch` refuses with a one-line message.
- CPU ranks use Gloo. GPU ranks use `cpu:gloo,cuda:nccl`: the flat buffer (on the GPU) goes
  through NCCL, the small CPU collectives (metrics, gathers, objects) through Gloo.
- A round is an in-place `all_reduce(SUM)` over the group's process group, then a scale by
  1/|group| (Gloo has no average; Horovod's Average is the same sum-then-scale), so fp64 runs
  equal Horovod's to rounding (bit for bit with 2 ranks, where the sum is one addition).
- Hier-AVG's groups are `dist.new_group`s, created on EVERY rank in the same sorted order (a
  torch.distributed rule: new_group is collective over the whole world).
- A peer that dies ends the job: torchrun stops the other ranks when one fails, and a peer that
  hangs makes every collective fail after `PRSGD_TORCHDIST_TIMEOUT_S` seconds (default 600), so no
  job waits forever.
"""
from __future__ import annotations

import datetime
import os
import sys

import torch
import torch.distributed as dist

from prsgd.core.errors import ConfigError
from prsgd.core.schedule import GLOBAL, Event
from .base import Comm, InFlight

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT")
TIMEOUT_ENV = "PRSGD_TORCHDIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0   # long enough for rank 0 to decode a dataset while the others wait

# Process groups by their ranks: like Horovod's process sets they live as long as the default
# group, so a second run in the same process reuses them.
_GROUPS: dict[tuple[int, ...], object] = {}


def launcher_env() -> dict[str, str]:
    """torchrun's variables; a clear refusal when this process was not started by torchrun."""
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise ConfigError(
            "--backend torchdist: start the ranks with torchrun, e.g. `torchrun --standalone "
            "--nproc-per-node 2 -m prsgd.train --backend torchdist ...` (missing "
            f"{', '.join(missing)}); or use --backend horovod (horovodrun) or packed")
    return {k: os.environ[k] for k in TORCHRUN_ENV}


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{TIMEOUT_ENV}: must be a positive number of seconds (got {text!r})")
    return value


def dist_backend(device_type: str) -> str:
    """What torch.distributed runs on: Gloo for CPU ranks; NCCL for CUDA tensors plus Gloo for
    CPU ones (the per-epoch metrics and the checkpoint's objects stay on the host)."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


class TorchDistComm(Comm):
    """Averaging across torch.distributed ranks. This process is one worker: `workers == [rank]`."""

    name = "torchdist"
    launcher = "torchrun"

    @classmethod
    def command(cls, spec, args: list[str]) -> list[str]:
        """`torchrun --standalone --nproc-per-node N -m prsgd.train ... --backend torchdist`
        (torchrun next to this Python, else `python -m torch.distributed.run`): one machine."""
        if spec.launch:
            raise ValueError("--hosts/--hostfile: only the horovod backend runs on several hosts")
        from prsgd.launch.commands import find_tool
        exe = find_tool("torchrun")
        prefix = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
        return [*prefix, "--standalone", "--nproc-per-node", str(spec.np), *args,
                *cls.train_flags(spec.np)]

    def __init__(self, backend: str, timeout_s: float, timed: bool = True):
        self.backend, self.timeout_s = backend, timeout_s
        self._one_worker_per_process(dist.get_rank(), dist.get_world_size(),
                                     int(os.environ["LOCAL_RANK"]),
                                     int(os.environ["LOCAL_WORLD_SIZE"]), timed)

    @classmethod
    def launch(cls, *, workers: int = 0, dynamic_groups: bool = False, device_type: str = "cpu",
               comm=None) -> "TorchDistComm":
        if comm is not None:
            raise ConfigError("--backend torchdist: runs on torchrun's world only (no comm=)")
        env, timeout_s = launcher_env(), timeout_seconds()
        # --device cuda without a GPU: Gloo here, and the trainer's device check says why.
        gpu = device_type == "cuda" and torch.cuda.is_available()
        backend = dist_backend("cuda" if gpu else "cpu")
        if gpu:   # NCCL needs each rank's device before its first collective
            torch.cuda.set_device(int(env["LOCAL_RANK"]) % torch.cuda.device_count())
        if not dist.is_initialized():   # a second run in the same process reuses the group
            dist.init_process_group(backend, init_method="env://",
                                    timeout=datetime.timedelta(seconds=timeout_s))
        return cls(backend, timeout_s)

    def provenance(self) -> dict:
        """config.json's provenance.comm: which torch.distributed backend and timeout ran."""
        return {"backend": self.name, "torch_distributed": self.backend,
                "timeout_s": self.timeout_s}

    def _group(self, group: tuple[int, ...]):
        """The process group of `group`'s ranks (None: the whole world)."""
        return None if len(group) == self.size else _GROUPS[tuple(group)]

    def register_groups(self, groups) -> None:
        # Collective over the WORLD: every rank creates every group, in the same order, even the
        # groups it is not in (torch.distributed's rule for new_group).
        for g in sorted(tuple(g) for g in groups):
            if 1 < len(g) < self.size and g not in _GROUPS:
                _GROUPS[g] = dist.new_group(list(g))

    def _average(self, t: torch.Tensor, group: tuple[int, ...]) -> None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self._group(group))
        t.mul_(1.0 / len(group))   # Horovod's Average: the sum scaled by 1/size

    def average_(self, region: torch.Tensor, event: Event, extra: torch.Tensor | None = None):
        """`extra` (diagnostics' few floats) is averaged right after `region`, in a second small
        collective over the same group (torch.distributed has no public fused allreduce)."""
        group = event.group_of(self.rank)

        def collective():
            if len(group) > 1:
                self._average(region, group)
                if extra is not None:
                    self._average(extra, group)

        seconds = self._timed(region, collective)
        nbytes = region.numel() * region.element_size() if len(group) > 1 else 0
        self.counters.add(event.level, nbytes, seconds)

    def start_grad_bucket(self, lo: int, hi: int):
        """`all_reduce(SUM, async_op=True)`; the scale by 1/N follows the wait. Collectives are
        matched by issue order here: every rank starts the buckets in the same order."""
        view = self.fm.grad[lo:hi]
        if self.size < 2:
            return None, view
        return dist.all_reduce(view, op=dist.ReduceOp.SUM, async_op=True), view

    def finish_grad_buckets(self, handles: list) -> None:
        def wait():
            for work, view in handles:
                if work is not None:
                    work.wait()
                    view.mul_(1.0 / self.size)   # as `_average`: Horovod's Average

        seconds = self._timed(self.fm.grad, wait)
        nbytes = sum(v.numel() * v.element_size() for _, v in handles) if self.size > 1 else 0
        self.counters.add(GLOBAL, nbytes, seconds)

    def average_start(self, buf: torch.Tensor, event: Event) -> InFlight:
        """`all_reduce(SUM, async_op=True)` over the group's process group; `average_wait` waits
        on the work and scales by 1/|group| (as `average_`)."""
        group = event.group_of(self.rank)
        work = None
        if len(group) > 1:
            work = dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self._group(group),
                                   async_op=True)
        return InFlight(buf, event, work)

    def average_wait(self, handle: InFlight) -> None:
        buf = handle.buf
        self._wait_timed(handle, lambda: self._finish_sum(handle),
                         buf.numel() * buf.element_size() if handle.work is not None else 0)

    def _finish_sum(self, handle: InFlight) -> None:
        """Wait for an `average_start` all_reduce(SUM) and scale by 1/|group| (as `_average`)."""
        if handle.work is not None:
            handle.work.wait()
            handle.buf.mul_(1.0 / len(handle.event.group_of(self.rank)))

    def average_rows_(self, t: torch.Tensor, event: Event) -> None:
        group = event.group_of(self.rank)
        if len(group) > 1:
            self._average(t, group)

    def average_rows_start(self, t: torch.Tensor, event: Event, tag: str = "") -> InFlight:
        """`average_start`'s collective (torch matches collectives by order, not by tag)."""
        return self.average_start(t, event)

    def average_rows_wait(self, handle: InFlight) -> None:
        """`average_wait` without counting (the caller counts its round)."""
        if not handle.done:
            self._finish_sum(handle)
            handle.done = True

    def gather_start(self, t: torch.Tensor) -> InFlight:
        """`all_gather(async_op=True)` into one row per rank; the wait concatenates them."""
        row = t.reshape(1, -1).contiguous()
        rows = [torch.empty_like(row) for _ in range(self.size)]
        return InFlight(row, None, (dist.all_gather(rows, row, async_op=True), rows))

    def gather_wait(self, handle: InFlight) -> torch.Tensor:
        if not handle.done:
            work, rows = handle.work
            work.wait()
            handle.work, handle.done = torch.cat(rows), True
        return handle.work

    def average_copy(self, region: torch.Tensor) -> torch.Tensor:
        out = region.detach().clone()
        self._average(out, tuple(range(self.size)))
        return out

    def sum_metrics(self, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        row = t.reshape(1, -1).contiguous()
        rows = [torch.empty_like(row) for _ in range(self.size)]
        dist.all_gather(rows, row)
        return torch.cat(rows)

    def broadcast_(self, t: torch.Tensor, root: int = 0) -> None:
        dist.broadcast(t, src=root)

    def broadcast_object(self, obj, root: int = 0):
        box = [obj]
        dist.broadcast_object_list(box, src=root)
        return box[0]

    def allgather_object(self, obj) -> list:
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
            _GROUPS.clear()
