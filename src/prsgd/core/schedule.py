"""When, and over whom, to average: pure functions of the local step count. No I/O, no state.

`schedule.events(step, worker, round_s)` answers, right after a worker's `step`-th local step
(1-based), which averaging rounds it takes part in now, as `Event(level, groups)`: `groups`
partitions the workers, and each group averages among itself. `round_s` is how long the worker's
current round would last if it made one more step (seconds so far + its last step's duration);
only the time-budget variant of Algorithm 3 looks at it.
Every algorithm of the family is a schedule:

- Algorithm 1 (PR-SGD) / K-AVG: every I steps, all workers (`Periodic`).
- Hier-AVG: every K1 steps within groups of S, every K1*K2 steps across all (`Hierarchical`).
- Algorithm 2: averaging epochs of lengths K^1, K^2, ... (`Varying`); after the list, the last
  length repeats, or grows by a factor per epoch (`growth`).
- One-shot averaging: only after the last step (`OneShot`).
- Post-local SGD: every step for the first E epochs, then every I (`PostLocal`).
- AdaComm (`Adaptive`): the run is cut into update periods of P local steps; period p averages
  every I_p steps and at its end. The algorithm appends I_{p+1} once period p's loss is known
  (algorithms/adacomm.py); the schedule itself is the frozen list decided so far.
- Algorithm 3 (`Heterogeneous`): worker i averages after each I_i of its own steps, or after
  each `budget_s` seconds of its own steps; the collective pairs the r-th round of every worker,
  so every worker must take part in the same number of rounds (`total_rounds`).
- Gradient allreduce (`gradient_allreduce`) is `Periodic(1)` for counting; its algorithm averages
  the gradients before each update instead of averaging the model (algorithms/grad_allreduce.py).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import accumulate, count

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

    def events(self, step: int, worker: int = 0, round_s: float = 0.0) -> list[Event]:
        return [Event(GLOBAL, all_workers(self.workers))] if step % self.interval == 0 else []


@dataclass(frozen=True)
class Hierarchical:
    local_interval: int   # K1
    global_every: int     # K2
    group_size: int       # S
    workers: int

    def events(self, step: int, worker: int = 0, round_s: float = 0.0) -> list[Event]:
        if step % (self.local_interval * self.global_every) == 0:
            return [Event(GLOBAL, all_workers(self.workers))]
        if step % self.local_interval == 0:
            return [Event(LOCAL, self.subgroups)]
        return []

    @property
    def subgroups(self) -> tuple[tuple[int, ...], ...]:
        """The groups of the local level (Horovod process sets are made for these)."""
        return blocks(self.workers, self.group_size)


@dataclass(frozen=True)
class Varying:
    lengths: tuple[int, ...]
    workers: int
    growth: float = 1.0   # after the list: K^{s+1} = max(1, round(K^s * growth))

    def length(self, s: int) -> int:
        """K^s, the local steps of averaging epoch s (0-based)."""
        if s < len(self.lengths):
            return self.lengths[s]
        return max(1, round(self.lengths[-1] * self.growth ** (s - len(self.lengths) + 1)))

    def boundary(self, s: int) -> int:
        """Local step count at the end of averaging epoch s (0-based)."""
        ends = list(accumulate(self.lengths))
        if s < len(ends):
            return ends[s]
        if self.growth == 1.0:
            return ends[-1] + (s - len(ends) + 1) * self.lengths[-1]
        return ends[-1] + sum(self.length(k) for k in range(len(ends), s + 1))

    def epoch_of(self, step: int) -> int:
        """The averaging epoch (0-based) that local step `step` (1-based) belongs to."""
        ends = list(accumulate(self.lengths))
        if step <= ends[-1]:
            return bisect.bisect_left(ends, step)
        if self.growth == 1.0:
            return len(ends) + (step - ends[-1] - 1) // self.lengths[-1]
        end = ends[-1]
        for s in count(len(ends)):   # growing lengths: few epochs, walk them
            end += self.length(s)
            if step <= end:
                return s

    def events(self, step: int, worker: int = 0, round_s: float = 0.0) -> list[Event]:
        return ([Event(GLOBAL, all_workers(self.workers))]
                if self.boundary(self.epoch_of(step)) == step else [])


@dataclass(frozen=True)
class OneShot:
    total_steps: int
    workers: int

    def events(self, step: int, worker: int = 0, round_s: float = 0.0) -> list[Event]:
        return [Event(GLOBAL, all_workers(self.workers))] if step == self.total_steps else []


@dataclass(frozen=True)
class PostLocal:
    switch_step: int      # steps of plain parallel SGD (I = 1) before local SGD starts
    interval: int
    workers: int

    def events(self, step: int, worker: int = 0, round_s: float = 0.0) -> list[Event]:
        if step <= self.switch_step or (step - self.switch_step) % self.interval == 0:
            return [Event(GLOBAL, all_workers(self.workers))]
        return []


@dataclass(frozen=True)
class Adaptive:
    """Rounds every I_p local steps within update period p (0-based) of `period_steps` steps, and
    one at the end of every period, so that each period starts from an averaged model (AdaComm
    computes the next interval from the loss of the models of the period just ended). `intervals`
    holds I_0, I_1, ... as decided so far: a step in a period whose interval is not decided yet
    is an error of the caller, not a guess. With every I_p = I and `period_steps` a multiple of
    I this is `Periodic(I)`."""
    intervals: tuple[int, ...]
    period_steps: int
    workers: int

    def events(self, step: int, worker: int = 0, round_s: float = 0.0) -> list[Event]:
        period, k = divmod(step - 1, self.period_steps)   # k + 1: the step within the period
        if (k + 1) % self.intervals[period] == 0 or k + 1 == self.period_steps:
            return [Event(GLOBAL, all_workers(self.workers))]
        return []

    def decided(self, interval: int) -> "Adaptive":
        """This schedule with the next period's interval appended."""
        return Adaptive(self.intervals + (interval,), self.period_steps, self.workers)


@dataclass(frozen=True)
class Heterogeneous:
    """Algorithm 3: rounds of unequal length. Worker i ends a round after I_i of its own steps
    (`intervals`), or, when `budget_s` > 0, when one more step would not fit in `budget_s`
    seconds (as many steps as fit, judged by the last step's duration; at least one step). A run has `total_rounds`
    rounds for every worker, whatever their step counts: that is what keeps the collectives
    paired. `reference` is the round length that step-based quantities (the number of rounds,
    the learning rate) are measured in: max(I_i), or the config's I in budget mode."""
    intervals: tuple[int, ...]   # I_i per worker (ignored in budget mode)
    workers: int
    budget_s: float = 0.0
    reference: int = 1

    def events(self, step: int, worker: int = 0, round_s: float = 0.0) -> list[Event]:
        done = round_s > self.budget_s if self.budget_s > 0 else step % self.intervals[worker] == 0
        return [Event(GLOBAL, all_workers(self.workers))] if done else []

    def lockstep(self, step_in_round: int) -> tuple[list[bool], list[Event]]:
        """Algorithm 3 with all workers in one process (packed backend), advancing together:
        at the round's `step_in_round`-th iteration (1-based), which workers make a step (worker
        i makes its first I_i) and whether the round's average comes now (after max I_i)."""
        active = [step_in_round <= i for i in self.intervals]
        done = step_in_round >= max(self.intervals)
        return active, ([Event(GLOBAL, all_workers(self.workers))] if done else [])

    def total_rounds(self, total_steps: int) -> int:
        """Rounds in a run of `total_steps` reference steps (at least one)."""
        return max(1, total_steps // self.reference)

    def reference_step(self, rounds_done: int, step_in_round: int) -> int:
        """The step of Algorithm 1 (I = reference) that a worker's step stands for, 1-based:
        equal to the worker's own step when all I_i equal the reference."""
        return rounds_done * self.reference + min(step_in_round, self.reference)


def rounds_through(schedule, steps: int, worker: int = 0) -> dict[str, int]:
    """How many rounds of each level a worker takes part in during its first `steps` steps."""
    out = {GLOBAL: 0, LOCAL: 0}
    for t in range(1, steps + 1):
        for e in schedule.events(t, worker):
            out[e.level] += 1
    return out


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
