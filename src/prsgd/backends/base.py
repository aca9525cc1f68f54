"""The communicator interface every backend implements completely, and the registry of backends.

A `Comm` moves ONE flat buffer (`comm.FlatModel`: `[params | BN stats | momentum]`) between the
workers of a run. The train loop, the algorithms, the checkpointer and the diagnostics talk only
to this interface; none of them asks which backend it has.

Workers and processes
- `size` processes (`rank` = this one) hold `num_workers` N workers; `workers` lists the worker
  indices this process holds: `[rank]` for one-worker-per-process backends (Horovod,
  torch.distributed), `range(N)` for the packed backend (every worker a replica of one model).
- A packed process may hold several runs (a packed sweep: `runs` C, replica = run * N + worker).
  `view(run)` is that run's communicator: it averages only the run's replicas and has its own
  counters. Backends with one run per process return `self`.

Regions
- `region` arguments are one of `fm.params`, `fm.state` (params + BN stats), `fm.flat` (+
  momentum), or `fm.grad`, of the flat model given to `attach`: a packed backend finds the
  replica rows of each tensor from it; process backends use the tensor as it is.

Initialisation: `make_comm(cfg, ...)` is the ONE place a backend is initialised (it calls the
registered class's `launch`). `attach(fm, runs)` then binds the flat buffer once it exists.

Facts about a backend are class attributes and class methods of its `Comm` (the config, the sweep
driver, the plots and the clock read them; nothing else asks for a backend by name):
`holds_all_workers` (one process holds all N workers as replicas, vs one worker per process),
`launcher` (the external launcher its ranks need), `sweepable`, `times_rounds` (whether a round's
measured seconds are communication the clock can be checked against), `validate_config` (its own
rules for a config), `run_workers` (N of a run) and `command` (the command line of one run).

Adding a backend: subclass `Comm` (or an existing backend), implement every abstract method, and
register it: `BACKENDS["name"] = "prsgd.backends.module:Class"` (imported lazily, so a missing
library only fails the runs that use it).
"""
from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prsgd.core.errors import ConfigError
from prsgd.core.schedule import Event


@dataclass
class Counters:
    """Rounds, bytes and seconds of averaging per level (`global`, `local`), of one run, as ONE
    worker sees them (every worker of a round sends and receives the same amounts).

    `bytes`: payload bytes this worker sent (an uncompressed round: its averaged buffer);
    `received`: payload bytes it received (an allreduce: the averaged buffer; an allgather: every
    other worker's payload); `collective_bytes`: the sent bytes by the collective that moved them
    ("allreduce", "allgather"). Payload bytes, not wire bytes: what a ring puts on each link is
    the clock's model of the collective (clock/collectives.py)."""
    rounds: dict = field(default_factory=lambda: {"global": 0, "local": 0})
    bytes: dict = field(default_factory=lambda: {"global": 0, "local": 0})
    seconds: dict = field(default_factory=lambda: {"global": 0.0, "local": 0.0})
    received: dict = field(default_factory=lambda: {"global": 0, "local": 0})
    collective_bytes: dict = field(default_factory=lambda: {"allreduce": 0, "allgather": 0})

    def add(self, level: str, nbytes: int, seconds: float, *, received: int | None = None,
            collectives: dict | None = None):
        """One round: `nbytes` sent (default: all through one allreduce, which returns as many:
        `received`); `collectives`: the sent bytes by collective when a round uses several."""
        self.rounds[level] += 1
        self.bytes[level] += nbytes
        self.seconds[level] += seconds
        self.received[level] += nbytes if received is None else received
        for name, sent in (collectives or {"allreduce": nbytes}).items():
            self.collective_bytes[name] = self.collective_bytes.get(name, 0) + sent

    def total(self, what: str):
        return sum(getattr(self, what).values())

    def to_dict(self) -> dict:
        return {"rounds": dict(self.rounds), "bytes": dict(self.bytes),
                "seconds": dict(self.seconds), "received": dict(self.received),
                "collective_bytes": dict(self.collective_bytes)}

    def load(self, d: dict):
        self.rounds, self.bytes, self.seconds = (dict(d[k]) for k in ("rounds", "bytes", "seconds"))
        # Checkpoints made before issue 19 hold no received/collective bytes: every round then was
        # one allreduce of the buffer, which returns as much as it sends.
        self.received = dict(d.get("received", self.bytes))
        self.collective_bytes = dict(d.get("collective_bytes",
                                           {"allreduce": sum(self.bytes.values()), "allgather": 0}))

    # the checkpoint's protocol
    state_dict = to_dict
    load_state_dict = load


def sync(t: torch.Tensor):
    """Wait for the device, so that a timed collective measures the collective only."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


@dataclass(eq=False)
class InFlight:
    """An average started by `Comm.average_start` (or rows started by `average_rows_start`,
    `gather_start`): its buffer, its event, the backend's handle (`work`; a finished gather's
    table) and whether the wait has finished (and, for `average_wait`, counted) it."""
    buf: torch.Tensor
    event: Event | None
    work: object = None
    done: bool = False


class Comm(ABC):
    """One backend's communicator (see the module docstring). Collective methods must be called
    by every process of the run (or of the event's group) in the same order."""

    name: str = ""
    rank: int = 0          # this process
    size: int = 1          # processes
    local_rank: int = 0    # this process among those on its machine (device choice, threads)
    local_size: int = 1
    num_workers: int = 1   # N workers of a run
    workers: list[int]     # worker indices held by this process
    counters: Counters     # this run's (or this view's) averaging counters
    timed: bool = True     # synchronise the device around rounds so their seconds are true

    # --- facts about the backend (class level: no process, no library needed) -----------------
    holds_all_workers: ClassVar[bool] = False  # True: the N workers are replicas in ONE process
    launcher: ClassVar[str] = ""      # the launcher its ranks need ("": `python -m prsgd.train`)
    sweepable: ClassVar[bool] = True  # the sweep driver (experiments/sweep.py) can start its runs
    times_rounds: ClassVar[bool] = True  # a round's measured seconds are real communication
    #                                      (False: averaged in memory; only the clock models it)

    @classmethod
    def validate_config(cls, cfg, world_size: int | None) -> None:
        """Raise ConfigError naming the flag for what this backend cannot run. Default (one
        worker per process): --workers, when given, must match the launcher's world."""
        if world_size is not None and cfg.workers and cfg.workers != world_size:
            raise ConfigError(f"--workers: does not match the launcher's {world_size} ranks "
                              f"(got {cfg.workers})")

    @classmethod
    def run_workers(cls, cfg, world_size: int | None) -> int:
        """N of the run: the launcher's world (one worker per process), or --workers before the
        world is known."""
        return world_size if world_size is not None else (cfg.workers or 1)

    @classmethod
    def train_flags(cls, workers: int) -> list[str]:
        """The trainer's flags that select this backend for a run of `workers` workers."""
        return ["--backend", cls.name]

    @classmethod
    def command(cls, spec, args: list[str]) -> list[str]:
        """The command line of one run of `spec.np` workers (`args`: `-m prsgd.train ...`);
        `spec`: the sweep's (np, gloo, launcher, launch). Raise ValueError when it cannot."""
        raise ValueError(f"--backend {cls.name}: the sweep cannot start its runs")

    # --- set-up ---------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def launch(cls, *, workers: int = 0, dynamic_groups: bool = False, device_type: str = "cpu",
               comm=None) -> "Comm":
        """Initialise the backend for this process and return its communicator. `workers`: N
        (packed: required; process backends: 0 or the launcher's world size); `dynamic_groups`:
        groups will be registered after start (Hier-AVG); `device_type`: where ranks train;
        `comm`: an existing communicator to run on (an mpi4py communicator for Horovod)."""

    def _one_worker_per_process(self, rank: int, size: int, local_rank: int, local_size: int,
                                timed: bool) -> None:
        """The process backends' world: one worker per process, worker index = rank."""
        self.rank, self.size, self.local_rank, self.local_size = rank, size, local_rank, local_size
        self.num_workers, self.workers = size, [rank]
        self.counters, self.timed = Counters(), timed

    def attach(self, fm, runs: int = 1) -> None:
        """Bind the flat buffer (`runs` packed runs of `len(workers)` replicas each)."""
        self.fm, self.runs = fm, runs

    def view(self, run: int) -> "Comm":
        """The communicator of packed run `run` (own replicas, own counters); default: self."""
        if run != 0:
            raise ValueError(f"{self.name}: one run per process, no run {run}")
        return self

    def register_groups(self, groups) -> None:
        """Create what averaging within `groups` needs (process sets); collective, same order on
        every process. Default: nothing to create."""

    # --- collectives over the flat buffer ------------------------------------------------------
    @abstractmethod
    def average_(self, region: torch.Tensor, event: Event, extra: torch.Tensor | None = None):
        """Average `region` in place within each group of `event` (this process's workers, their
        groups), counting one round of `event.level`. `extra`: a few more values averaged within
        the same groups in the same collective (one row per worker of this process, or 1-d with
        one worker per process)."""

    def replica_rows(self) -> slice:
        """The replicas of the attached flat model that are this run's workers on this process
        (`FlatModel.rows`): the one replica of a process backend; a packed run's N."""
        return slice(0, len(self.workers))

    @abstractmethod
    def average_rows_(self, t: torch.Tensor, event: Event) -> None:
        """Average `t` in place within each group of `event`, in `t`'s own dtype (fp16 sums in
        fp16), counting nothing (the caller counts its round). `t`: one row per worker of this
        process, (len(workers), L) (a process backend also takes a 1-d tensor). Every worker of a
        group ends with the same bits."""

    @abstractmethod
    def average_copy(self, region: torch.Tensor) -> torch.Tensor:
        """The mean over ALL N workers of the run of `region`, as a new tensor laid out as for one
        replica; the buffer is untouched (evaluation of the averaged model)."""

    # --- bucketed gradient averaging (gradient_allreduce --bucket-mb) ---------------------------
    # DDP / Horovod DistributedOptimizer: a bucket's allreduce starts inside backward, as soon as
    # its gradients are ready; the update waits for all of them. A bucket is `fm.grad[lo:hi]`, a
    # whole number of parameter segments of the attached flat model; every process starts the
    # same buckets in the same order (torch.distributed matches collectives by issue order).
    @abstractmethod
    def start_grad_bucket(self, lo: int, hi: int):
        """Start averaging `fm.grad[lo:hi]` over ALL N workers of the run, asynchronously where
        the library can (returns at once while the allreduce runs); returns a handle for
        `finish_grad_buckets`. Counts nothing yet."""

    @abstractmethod
    def finish_grad_buckets(self, handles: list) -> None:
        """Wait for every started bucket (their averages are then in `fm.grad`) and count them
        as ONE global round whose bytes are the buckets' bytes together (the whole gradient, as
        the single-call round counts) and whose seconds are this wait: the communication that
        backward did not hide."""

    # --- an average in flight (overlapped rounds: algorithms/overlap.py) ------------------------
    def average_start(self, buf: torch.Tensor, event: Event) -> "InFlight":
        """Start averaging `buf` in place within each group of `event` and return at once with
        the handle `average_wait` takes. `buf` is laid out like a region of the flat model (a
        snapshot the caller owns and leaves untouched until the wait). The round is counted by
        the wait. Default (a backend with no asynchronous collective): nothing starts here and
        the wait averages synchronously, which is correct and hides nothing."""
        return InFlight(buf, event)

    def average_wait(self, handle: "InFlight") -> None:
        """Block until `handle`'s average is in its `buf`, and count one round of its level with
        the seconds spent WAITING here (not the seconds it was in flight: metrics.csv's comm
        seconds then show what overlapping did not hide). A second wait does nothing."""
        if not handle.done:
            self.average_(handle.buf, handle.event)
            handle.done = True

    # --- a compressed round in flight (algorithms/overlap_compressed.py) --------------------------
    # As `average_rows_` and `gather_rows`, but started now and finished by the wait; they count
    # nothing (the round counts itself, with the seconds its wait blocked). Defaults: nothing
    # starts, the wait runs the synchronous collective (correct, hides nothing).
    def average_rows_start(self, t: torch.Tensor, event: Event, tag: str = "") -> "InFlight":
        """Start `average_rows_(t, event)`; `t` is the caller's and untouched until the wait.
        `tag` names it among the collectives in flight together (Horovod matches by name)."""
        return InFlight(t, event)

    def average_rows_wait(self, handle: "InFlight") -> None:
        """Block until `handle.buf` holds the average (a second wait does nothing)."""
        if not handle.done:
            self.average_rows_(handle.buf, handle.event)
            handle.done = True

    def gather_start(self, t: torch.Tensor) -> "InFlight":
        """Start `gather_rows(t)`; `gather_wait` returns the (N, L) table."""
        return InFlight(t, None)

    def gather_wait(self, handle: "InFlight") -> torch.Tensor:
        """The table of `handle`'s gather (kept in `handle.work`: a second wait returns it)."""
        if not handle.done:
            handle.work, handle.done = self.gather_rows(handle.buf), True
        return handle.work

    def own_rows(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Views of `t` (laid out like a region of the flat model) that hold this run's workers,
        for arithmetic that must not touch another packed run: `[t]` with one run per process."""
        return [t]

    # --- small collectives ---------------------------------------------------------------------
    @abstractmethod
    def sum_metrics(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of `t` (CPU, float64) over processes: each process sends its workers' sums."""

    @abstractmethod
    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every worker's row: `t` is (len(workers), L) (or 1-d with one worker per process);
        returns the (N, L) table in worker order, on every process."""

    @abstractmethod
    def broadcast_(self, t: torch.Tensor, root: int = 0) -> None:
        """Overwrite `t` with process `root`'s `t`, in place."""

    @abstractmethod
    def broadcast_object(self, obj, root: int = 0):
        """Process `root`'s picklable `obj`, returned on every process."""

    @abstractmethod
    def allgather_object(self, obj) -> list:
        """Every process's picklable `obj`, as a list by rank."""

    @abstractmethod
    def barrier(self) -> None:
        ...

    def shutdown(self) -> None:
        """Release the backend at the end of the process (default: nothing)."""

    def stopped_by_peer(self, error: BaseException, last_step_at: float) -> bool:
        """Whether `error`, raised in a collective, means a peer rank was stopped (a signal, its
        launcher ending the job) rather than broken: the run is then `interrupted`, not
        `failed`. Only a backend can tell; by default nothing is."""
        return False

    def provenance(self) -> dict:
        """What config.json's provenance records about the backend (`comm`); default its name."""
        return {"backend": self.name}

    # --- helpers for implementations -----------------------------------------------------------
    def _wait_timed(self, handle: InFlight, finish, nbytes: int) -> None:
        """`average_wait` of a backend whose collective is in flight: run `finish()` (block and
        complete the average), count the round with the seconds it blocked, mark it done."""
        if handle.done:
            return
        seconds = self._timed(handle.buf, finish)
        handle.done = True
        self.counters.add(handle.event.level, nbytes, seconds)

    def _timed(self, region: torch.Tensor, fn):
        """Run `fn()`, timing it with the device synchronised around it when `timed`."""
        if self.timed:
            sync(region)
        t0 = time.perf_counter()
        fn()
        if self.timed:
            sync(region)
        return time.perf_counter() - t0


# name -> "module:Class", imported on first use (a backend's library may be missing).
BACKENDS: dict[str, str] = {
    "horovod": "prsgd.backends.horovod:HorovodComm",
    "packed": "prsgd.backends.packed:PackedComm",
    "torchdist": "prsgd.backends.torchdist:TorchDistComm",
}


def backend_class(name: str) -> type[Comm]:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def sweepable_backends() -> tuple[str, ...]:
    return tuple(n for n in BACKENDS if backend_class(n).sweepable)


def packing_backend() -> str:
    """The backend that holds every worker (and several runs) in one process."""
    return next(n for n in BACKENDS if backend_class(n).holds_all_workers)


def times_rounds(name: str) -> bool:
    """Whether runs of backend `name` measure their rounds (unknown names: assume they do)."""
    return backend_class(name).times_rounds if name in BACKENDS else True


def make_comm(name: str, *, workers: int = 0, dynamic_groups: bool = False,
              device_type: str = "cpu", comm=None) -> Comm:
    """The one place a backend is initialised (see `Comm.launch`)."""
    return backend_class(name).launch(workers=workers, dynamic_groups=dynamic_groups,
                                      device_type=device_type, comm=comm)
