"""When, and over whom, to average: pure functions of the local step count. No I/O, no state.

`schedule.events(step, worker)` answers, right after a worker's `step`-th local step (1-based),
which averaging rounds it takes part in now, as `Event(level, groups)`: `groups` partitions the
workers, and each group averages among itself. Every algorithm of the family is a schedule:

- Algorithm 1 (PR-SGD) / K-AVG: every I steps, all workers (`Periodic`).
- Hier-AVG: every K1 steps within groups of S, every K1*K2 steps across all (`Hierarchical`).
- Algorithm 2: averaging epochs of lengths K^1, K^2, ... (`Varying`); the last length repeats.
- One-shot averaging: only after the last step (`OneShot`).
- Post-local SGD: every step for the first E epochs, then every I (`PostLocal`).
- Algorithm 3 with step counts: worker i averages after each I_i of its own steps
  (`Heterogeneous`); the collective pairs the r-th round of every worker.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import accumulate

GLOBAL, LOCAL = "global", "local"


@dataclass(frozen=True)
class Event:
    level: str
    groups: tuple[tuple[int, ...], ...]

    def group_of(self, worker: int) -> tuple[int, ...]:
        for g in self.groups:
            if worker in g:
                return g
        raise ValueError(f"worker {worker} is in no group of {self}")


def all_workers(n: int) -> tuple[tuple[int, ...], ...]:
    return (tuple(range(n)),)


def blocks(n: int, size: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(range(s, s + size)) for s in range(0, n, size))


@dataclass(frozen=True)
class Periodic:
    interval: int
    workers: int

    def events(self, step: int, worker: int = 0) -> list[Event]:
        return [Event(GLOBAL, all_workers(self.workers))] if step % self.interval == 0 else []


@dataclass(frozen=True)
class Hierarchical:
    local_interval: int   # K1
    global_every: int     # K2
    group_size: int       # S
    workers: int

    def events(self, step: int, worker: int = 0) -> list[Event]:
        if step % (self.local_interval * self.global_every) == 0:
            return [Event(GLOBAL, all_workers(self.workers))]
        if step % self.local_interval == 0:
            return [Event(LOCAL, blocks(self.workers, self.group_size))]
        return []


@dataclass(frozen=True)
class Varying:
    lengths: tuple[int, ...]
    workers: int

    def boundary(self, s: int) -> int:
        """Local step count at the end of averaging epoch s (0-based)."""
        ends = list(accumulate(self.lengths))
        if s < len(ends):
            return ends[s]
        return ends[-1] + (s - len(ends) + 1) * self.lengths[-1]

    def epoch_of(self, step: int) -> int:
        """The averaging epoch (0-based) that local step `step` (1-based) belongs to."""
        ends = list(accumulate(self.lengths))
        if step <= ends[-1]:
            return bisect.bisect_left(ends, step)
        return len(ends) + (step - ends[-1] - 1) // self.lengths[-1]

    def events(self, step: int, worker: int = 0) -> list[Event]:
        return ([Event(GLOBAL, all_workers(self.workers))]
                if self.boundary(self.epoch_of(step)) == step else [])


@dataclass(frozen=True)
class OneShot:
    total_steps: int
    workers: int

    def events(self, step: int, worker: int = 0) -> list[Event]:
        return [Event(GLOBAL, all_workers(self.workers))] if step == self.total_steps else []


@dataclass(frozen=True)
class PostLocal:
    switch_step: int      # steps of plain parallel SGD (I = 1) before local SGD starts
    interval: int
    workers: int

    def events(self, step: int, worker: int = 0) -> list[Event]:
        if step <= self.switch_step or (step - self.switch_step) % self.interval == 0:
            return [Event(GLOBAL, all_workers(self.workers))]
        return []


@dataclass(frozen=True)
class Heterogeneous:
    intervals: tuple[int, ...]   # I_i per worker

    def events(self, step: int, worker: int = 0) -> list[Event]:
        if step % self.intervals[worker] == 0:
            return [Event(GLOBAL, all_workers(len(self.intervals)))]
        return []

    def rounds_after(self, step: int, worker: int) -> int:
        return step // self.intervals[worker]


def rounds_through(schedule, steps: int, worker: int = 0) -> dict[str, int]:
    """How many rounds of each level a worker takes part in during its first `steps` steps."""
    out = {GLOBAL: 0, LOCAL: 0}
    for t in range(1, steps + 1):
        for e in schedule.events(t, worker):
            out[e.level] += 1
    return out


def make_schedule(algorithm: str, *, workers: int, interval: int = 1, group_size: int = 0,
                  global_every: int = 1, epoch_lengths=(), worker_intervals=(),
                  local_epochs: int = 0, steps_per_epoch: int = 1, total_steps: int = 0):
    if algorithm in ("prsgd", "kavg", "gradient_allreduce"):
        # gradient_allreduce averages gradients every step instead; its model never diverges,
        # so the schedule is the trivial I = 1 one (used for counting only).
        return Periodic(1 if algorithm == "gradient_allreduce" else interval, workers)
    if algorithm == "hier":
        return Hierarchical(interval, global_every, group_size, workers)
    if algorithm == "varying":
        return Varying(tuple(epoch_lengths), workers)
    if algorithm == "one_shot":
        return OneShot(total_steps, workers)
    if algorithm == "post_local":
        return PostLocal(local_epochs * steps_per_epoch, interval, workers)
    if algorithm == "hetero":
        return Heterogeneous(tuple(worker_intervals) or (interval,) * workers)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def lr_at(step: int, *, base_lr: float, steps_per_epoch: int, milestones=(), gamma: float = 0.1,
          varying: Varying | None = None, epoch_lrs=(), shift: float = 0.0) -> float:
    """Learning rate for local step `step` (1-based): step decay at global-epoch milestones, or
    Algorithm 2's per-averaging-epoch gamma^s when `epoch_lrs` is given."""
    if varying is not None and epoch_lrs:
        s = varying.epoch_of(step)
        return epoch_lrs[min(s, len(epoch_lrs) - 1)]
    epoch = (step - 1) // steps_per_epoch
    decay = shift / (shift + step - 1) if shift > 0 else 1.0   # Stich (2019): eta_t ~ 1/(a + t)
    return base_lr * gamma ** bisect.bisect_right(list(milestones), epoch) * decay
