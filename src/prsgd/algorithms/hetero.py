"""Algorithm 3: rounds of unequal length. Worker i averages after I_i of its own steps (or after a
time budget per round, and at the latest after as many steps as the run has per worker); the
r-th rounds of all workers pair up in one collective. A worker interval longer than the run is
refused (`validate_run`).

Under a process backend each worker steps at its own pace and the collective waits. Packed, all
workers live in one process and advance in lockstep iterations in which only the workers with
steps left in the round step (`schedule.lockstep`); idle replicas keep their state.
Reported epochs are counted in rounds, which every worker shares (not in local steps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prsgd.core.errors import ConfigError
from prsgd.core.schedule import GLOBAL, Event, Heterogeneous, all_workers
from prsgd.records import rundir
from .base import Algorithm, AlgorithmOptions, bad, option



class Hetero(Algorithm):
    name = "hetero"
    counts_rounds = True

    @dataclass
    class Options(AlgorithmOptions):
        worker_intervals: tuple[int, ...] = option((), "I_1,...,I_N: local steps per round of "
                                                       "each worker (default: all I)")
        round_budget_s: float = option(0.0, "instead: wall-clock seconds of local steps per "
                                            "round (horovod backend)")

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        from prsgd.backends import backend_class
        o = cfg.algo
        if any(k <= 0 for k in o.worker_intervals):
            bad(cfg, "worker_intervals", "every I_i must be a positive integer")
        if o.round_budget_s < 0:
            bad(cfg, "round_budget_s", "must be >= 0")
        if o.worker_intervals and len(o.worker_intervals) != workers:
            bad(cfg, "worker_intervals", f"needs one value per worker ({workers})")
        if o.worker_intervals and o.round_budget_s:
            raise ConfigError("--round-budget-s: give either --worker-intervals or "
                              "--round-budget-s for --algorithm hetero, not both")
        if backend_class(cfg.backend).holds_all_workers:
            # Packed replicas share one process and one clock: fixed per-worker intervals only.
            if o.round_budget_s:
                raise ConfigError("--round-budget-s: needs the horovod backend (packed replicas "
                                  "share one clock); use --worker-intervals")
            if cfg.diagnostics:
                raise ConfigError("--diagnostics: not with --algorithm hetero on the packed "
                                  "backend; use the horovod backend")

    @classmethod
    def validate_run(cls, cfg, *, steps_per_epoch: int, total_steps: int) -> None:
        """A round must fit the run: the run has `total_steps // max(I_i)` rounds (at least
        one), so a worker interval longer than the run would make its one round run past the
        run's steps (or, far longer, never end)."""
        o = cfg.algo
        longest = max(o.worker_intervals) if o.worker_intervals else cfg.interval
        if longest > total_steps:
            flag = "worker_intervals" if o.worker_intervals else "interval"
            bad(cfg, flag, f"a round of {longest} local steps is longer than the run "
                f"({total_steps} steps per worker)")

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        self.lockstep = len(self.local_workers) > 1   # packed: every worker in this process
        s = self.schedule
        self.total_rounds = s.total_rounds(self.total_steps)
        self.rounds_per_epoch = max(1, self.steps_per_epoch // s.reference)
        self._round_steps: list = []   # this epoch's steps per round (per local worker)

    def make_schedule(self):
        o, interval = self.opts, self.cfg.interval
        intervals = tuple(o.worker_intervals) or (interval,) * self.N
        reference = interval if o.round_budget_s > 0 else max(intervals)
        return Heterogeneous(intervals, self.N, float(o.round_budget_s), reference)

    def active(self, loop):
        return self.schedule.lockstep(loop.step_in_round + 1)[0] if self.lockstep else None

    def events(self, loop, round_s: float):
        if self.lockstep:
            return self.schedule.lockstep(loop.step_in_round)[1]
        if self.schedule.budget_s > 0 and loop.step_in_round >= self.total_steps:
            # A budget far longer than the steps take would hold the run forever: a round also
            # ends once the worker made as many steps in it as the whole run has.
            return [Event(GLOBAL, all_workers(self.N))]
        return super().events(loop, round_s)

    def lr(self, loop) -> float:
        # the lr follows the shared rounds, not the worker's own step count
        return self._lr_at(self.schedule.reference_step(loop.rounds_done, loop.step_in_round))

    def round_done(self, loop) -> None:
        self._round_steps.append(list(self.schedule.intervals) if self.lockstep
                                 else [loop.step_in_round])

    def end_epoch(self, run, loop, train_loss: float) -> None:
        """rounds.jsonl: the steps every worker made in each round of this epoch (one gather)."""
        mine = torch.tensor(self._round_steps, dtype=torch.int64).reshape(-1, len(
            self.local_workers)).T.contiguous()
        table = run.comm.gather_rows(mine).tolist()    # (workers, rounds)
        first = loop.rounds_done - len(self._round_steps)
        if run.is_writer:
            rundir.append_rounds(run.run_dir, [
                {"round": first + r + 1, "epoch": loop.epoch + 1,
                 "steps": [row[r] for row in table]} for r in range(len(self._round_steps))])
        self._round_steps = []

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_rounds / self.rounds_per_epoch)

    def epoch_end(self, loop) -> int:
        return min(loop.rounds_done + self.rounds_per_epoch, self.total_rounds)

    def epoch_done(self, loop, end: int) -> bool:
        return loop.rounds_done >= end

    @classmethod
    def label(cls, c: dict) -> str:
        if c.get("round_budget_s"):
            return f"Alg 3 budget {c['round_budget_s']:g}s/round"
        return f"Alg 3 I_i={','.join(map(str, c['worker_intervals'] or [c['interval']]))}"

    @classmethod
    def clock_shape(cls, c: dict, workers: int) -> dict:
        """Rounds, not steps, set the compute: worker i makes I_i steps per round (or each
        round lasts about the budget) and a round waits for the slowest worker."""
        return {**super().clock_shape(c, workers), "round_steps": tuple(c.get("worker_intervals") or ()),
                "round_budget_s": float(c.get("round_budget_s") or 0.0)}
