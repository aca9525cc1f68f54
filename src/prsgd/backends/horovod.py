"""Horovod: one worker per process; a round is one in-place `allreduce_(op=Average)` over the
group's process set (Gloo, MPI or NCCL underneath, whatever Horovod was built with)."""
from __future__ import annotations

import os
import sys
import time

import torch

from prsgd.core.errors import ConfigError
from prsgd.core.schedule import GLOBAL, Event
from .base import Comm, InFlight

# HOROVOD_CYCLE_TIME for ranks that train on a GPU (`make bench-comm`, results/bench/comm-*.json):
# a round's allreduce waits for the background thread's next cycle. With a rank that leaves the
# CPU cores free, 0.1 ms instead of Horovod's 1 ms cut that wait by ~45% at no compute cost;
# with ranks that keep every core busy (CPU training) the faster-polling thread slowed compute
# (2 ranks on 2 cores: rounds 15% slower), so CPU runs keep Horovod's default.
GPU_CYCLE_TIME_MS = "0.1"


def cycle_time_default(device_type: str) -> str | None:
    """The HOROVOD_CYCLE_TIME this process sets unless the user set one: None keeps Horovod's."""
    return GPU_CYCLE_TIME_MS if device_type == "cuda" else None


def init_horovod(dynamic_process_sets: bool = False, device_type: str = "cpu", comm=None):
    """The one place Horovod is initialised. `dynamic_process_sets`: allow `hvd.add_process_set`
    after init (Hier-AVG's groups; it sets HOROVOD_DYNAMIC_PROCESS_SETS=1 for this process).
    `device_type`: where this rank trains, for the cycle-time default (a user's env var wins).
    `comm`: an mpi4py communicator (or list of ranks) to run on, passed to `hvd.init(comm=...)`
    (Horovod built with MPI); None = all ranks of the launcher."""
    import horovod.torch as hvd
    cycle = cycle_time_default(device_type)
    if cycle is not None:
        os.environ.setdefault("HOROVOD_CYCLE_TIME", cycle)
    kwargs = {"process_sets": "dynamic" if dynamic_process_sets else None}
    if comm is not None:
        kwargs["comm"] = comm
    hvd.init(**kwargs)
    return hvd


# Horovod process sets by their ranks; one Horovod (and so one set of process sets) per process.
_PROCESS_SETS: dict[tuple[int, ...], object] = {}


# --- what a run records about Horovod (also reported by prsgd.doctor) ---------------------------
def allreduce_path(built: dict, device_type: str, controller: str | None) -> str:
    """How Horovod reduces a tensor on `device_type`: 'nccl' for CUDA tensors of a NCCL build;
    otherwise the CPU controller ('gloo' or 'mpi'), prefixed 'cpu-staging-' for CUDA tensors
    (Horovod's DoAllreduceCudaOnCPU: device -> host copy, reduce, host -> device copy)."""
    ctrl = controller or ("gloo" if built.get("gloo") else "mpi" if built.get("mpi") else "none")
    if device_type == "cuda":
        return "nccl" if built.get("nccl") else f"cpu-staging-{ctrl}"
    return ctrl


def controller_of(hvd) -> str | None:
    """The controller an initialised Horovod runs: gloo (horovodrun --gloo) or mpi (mpirun)."""
    if hvd.gloo_enabled():
        return "gloo"
    return "mpi" if hvd.mpi_enabled() else None


def build_flags() -> dict:
    """The build key and flags the install script recorded next to the installed Horovod."""
    try:
        import horovod
    except ImportError:
        return {}
    from prsgd.install import hvd_build   # stdlib only: where the install script writes it
    path = os.path.join(os.path.dirname(horovod.__file__), hvd_build.MARKER)
    if not os.path.exists(path):
        return {"key": None, "note": "not installed by scripts/install_horovod.sh"}
    import json
    with open(path) as f:
        return json.load(f)


def horovod_record(hvd, device_type: str) -> dict | None:
    """Provenance of one run: Horovod's build and the allreduce path its tensors took."""
    if hvd is None:
        return None
    built = {"gloo": bool(hvd.gloo_built()), "mpi": bool(hvd.mpi_built()),
             "nccl": bool(hvd.nccl_built())}
    ctrl = controller_of(hvd)
    rec = build_flags()
    return {"built": built, "controller": ctrl, "key": rec.get("key"),
            "flags": rec.get("flags", {}),
            "allreduce_path": allreduce_path(built, device_type, ctrl)}


class HorovodComm(Comm):
    """Averaging across Horovod ranks. This process is one worker: `workers == [rank]`."""

    name = "horovod"
    launcher = "horovodrun"   # or OpenMPI's mpirun (Horovod built with MPI)

    @classmethod
    def validate_config(cls, cfg, world_size: int | None) -> None:
        super().validate_config(cfg, world_size)
        if cfg.compressor == "bf16":   # horovod.torch refuses torch.BFloat16Tensor (0.28)
            raise ConfigError("--compressor: Horovod has no bfloat16 allreduce; use fp16, or "
                              "bf16 with --backend torchdist or packed (got 'bf16')")

    @classmethod
    def train_flags(cls, workers: int) -> list[str]:
        return []   # the trainer's default backend (commands recorded by sweeps stay the same)

    @classmethod
    def command(cls, spec, args: list[str]) -> list[str]:
        """`horovodrun -np N [--gloo] [hosts] python ARGS`, or `mpirun ... python ARGS` with
        `spec.launcher == "mpirun"`."""
        from prsgd.launch import hosts as hosts_mod
        from prsgd.launch.commands import find_tool, mpirun_prefix
        if spec.launcher == "mpirun":
            if set(spec.launch) - {"hosts"}:
                raise ValueError("--launcher mpirun: takes --hosts only (--hostfile, "
                                 "--network-interface, --gloo-timeout-seconds and "
                                 "--horovodrun-args are horovodrun's); pass mpirun options "
                                 "through its own MCA env")
            return [*mpirun_prefix(spec.np, hosts=spec.launch.get("hosts")), sys.executable,
                    *args]
        hvdrun = find_tool("horovodrun")
        if hvdrun is None:
            raise ValueError("horovodrun not found next to this Python or on PATH; install "
                             "Horovod (make install) or use --backend packed")
        return [hvdrun, "-np", str(spec.np), *(["--gloo"] if spec.gloo else []),
                *hosts_mod.horovodrun_args(spec.launch), sys.executable, *args]

    def __init__(self, hvd, timed: bool = True):
        self.hvd = hvd
        self._one_worker_per_process(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(),
                                     timed)

    @classmethod
    def launch(cls, *, workers: int = 0, dynamic_groups: bool = False, device_type: str = "cpu",
               comm=None) -> "HorovodComm":
        self = cls(init_horovod(dynamic_groups, device_type, comm=comm))
        self.device_type = device_type
        return self

    def stopped_by_peer(self, error: BaseException, last_step_at: float) -> bool:
        """Horovod's error on the ranks left when a peer rank exits (a signal to that rank, or
        horovodrun ending the job): the job was stopped, not broken. The error carries no cause,
        so the wait tells the two apart: a peer that exited breaks the collective at once, while
        a peer or link that stopped answering (a cut cable, a hung node) ends it only after
        Gloo's timeout (HOROVOD_GLOO_TIMEOUT_SECONDS, set by horovodrun; 30 s by default): that
        is a failure."""
        if error.__class__.__name__ != "HorovodInternalError":
            return False
        try:
            timeout = float(os.environ.get("HOROVOD_GLOO_TIMEOUT_SECONDS", 30))
        except ValueError:
            timeout = 30.0
        waited = time.monotonic() - last_step_at if last_step_at else 0.0
        return waited < 0.9 * timeout

    def provenance(self) -> dict:
        """The backend as it ran: Horovod's build flags and the path a tensor's allreduce took
        (NCCL, or staged through the CPU: `allreduce_path`; prsgd.doctor reports the same)."""
        return {"backend": self.name,
                "horovod_build": horovod_record(self.hvd, getattr(self, "device_type", "cpu"))}

    def process_set(self, group: tuple[int, ...]):
        if len(group) == self.size:
            return self.hvd.global_process_set
        return _PROCESS_SETS[group]

    def register_groups(self, groups):
        """Create the process sets of `groups` (Hier-AVG's). Needs Horovod initialised with
        dynamic process sets (`launch(dynamic_groups=True)`). Process sets live as long as
        Horovod, so they are kept per process: a second run in the same process reuses them."""
        for g in sorted(tuple(g) for g in groups):
            if 1 < len(g) < self.size and g not in _PROCESS_SETS:
                _PROCESS_SETS[g] = self.hvd.add_process_set(list(g))

    def average_(self, region: torch.Tensor, event: Event, extra: torch.Tensor | None = None):
        """`extra` is fused with `region` into ONE allreduce by Horovod (diagnostics: each
        worker's ‖x_i − ref‖², see diagnostics.py)."""
        group = event.group_of(self.rank)
        hvd, name = self.hvd, f"avg.{event.level}"

        def collective():
            if len(group) > 1 and extra is not None:
                hvd.grouped_allreduce_([region, extra], op=hvd.Average, name=name,
                                       process_set=self.process_set(group))
            elif len(group) > 1:
                hvd.allreduce_(region, op=hvd.Average, name=name,
                               process_set=self.process_set(group))

        seconds = self._timed(region, collective)
        nbytes = region.numel() * region.element_size() if len(group) > 1 else 0
        self.counters.add(event.level, nbytes, seconds)

    def start_grad_bucket(self, lo: int, hi: int):
        """`hvd.allreduce_async_(op=Average)`: queued for Horovod's background thread, which
        negotiates it with the other ranks by name (so ranks may start buckets in any order)
        and may fuse buckets that are ready in the same cycle."""
        view = self.fm.grad[lo:hi]
        if self.size < 2:
            return None, view
        return self.hvd.allreduce_async_(view, op=self.hvd.Average, name=f"grad.{lo}"), view

    def finish_grad_buckets(self, handles: list) -> None:
        def wait():
            for handle, _ in handles:
                if handle is not None:
                    self.hvd.synchronize(handle)

        seconds = self._timed(self.fm.grad, wait)
        nbytes = sum(v.numel() * v.element_size() for _, v in handles) if self.size > 1 else 0
        self.counters.add(GLOBAL, nbytes, seconds)

    def average_start(self, buf: torch.Tensor, event: Event) -> InFlight:
        """`hvd.allreduce_async_(op=Average)` over the group's process set; `average_wait` is
        `hvd.synchronize` on its handle."""
        return self._average_async(buf, event, f"avg.async.{event.level}")

    def _average_async(self, t: torch.Tensor, event: Event, name: str) -> InFlight:
        """`hvd.allreduce_async_(op=Average)` of `t` over the group's process set, named `name`
        (Horovod matches in-flight collectives by name); nothing for a group of one."""
        group = event.group_of(self.rank)
        work = None
        if len(group) > 1:
            work = self.hvd.allreduce_async_(t, op=self.hvd.Average, name=name,
                                             process_set=self.process_set(group))
        return InFlight(t, event, work)

    def average_wait(self, handle: InFlight) -> None:
        work = handle.work
        self._wait_timed(handle, lambda: work is not None and self.hvd.synchronize(work),
                         handle.buf.numel() * handle.buf.element_size() if work is not None else 0)

    def average_rows_(self, t: torch.Tensor, event: Event) -> None:
        group = event.group_of(self.rank)
        if len(group) > 1:   # Horovod's Average: the sum (in t's dtype) scaled by 1/size
            self.hvd.allreduce_(t, op=self.hvd.Average, name=f"rows.{event.level}",
                                process_set=self.process_set(group))

    def average_rows_start(self, t: torch.Tensor, event: Event, tag: str = "") -> InFlight:
        """`hvd.allreduce_async_(op=Average)` (as `average_rows_`); the wait synchronizes."""
        return self._average_async(t, event, f"rows.async.{event.level}.{tag}")

    def average_rows_wait(self, handle: InFlight) -> None:
        if not handle.done:
            if handle.work is not None:
                self.hvd.synchronize(handle.work)
            handle.done = True

    def gather_start(self, t: torch.Tensor) -> InFlight:
        """`hvd.allgather_async` of this rank's row; the wait's `synchronize` returns the table."""
        return InFlight(t, None, self.hvd.allgather_async(t.reshape(1, -1), name="gather.async"))

    def gather_wait(self, handle: InFlight) -> torch.Tensor:
        if not handle.done:
            handle.work, handle.done = self.hvd.synchronize(handle.work), True
        return handle.work

    def average_copy(self, region: torch.Tensor) -> torch.Tensor:
        return self.hvd.allreduce(region.detach().clone(), op=self.hvd.Average, name="avg.copy")

    def sum_metrics(self, t: torch.Tensor) -> torch.Tensor:
        return self.hvd.allreduce(t, op=self.hvd.Sum, name="metrics")

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return self.hvd.allgather(t.reshape(1, -1), name="gather.rows")

    def broadcast_(self, t: torch.Tensor, root: int = 0) -> None:
        self.hvd.broadcast_(t, root_rank=root, name="bcast.tensor")

    def broadcast_object(self, obj, root: int = 0):
        # An explicit name: the default is the type's name, which differs between ranks for None.
        return self.hvd.broadcast_object(obj, root_rank=root, name="bcast.object")

    def allgather_object(self, obj) -> list:
        return self.hvd.allgather_object(obj, name="gather.object")

    def barrier(self) -> None:
        self.hvd.barrier()
