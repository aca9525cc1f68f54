"""Algorithm 3: rounds of unequal length. Worker i averages after I_i of its own steps (or after a
time budget per round); the r-th rounds of all workers pair up in one collective.

Under a process backend each worker steps at its own pace and the collective waits. Packed, all
workers live in one process and advance in lockstep iterations in which only the workers with
steps left in the round step (`schedule.lockstep`); idle replicas keep their state.
Reported epochs are counted in rounds, which every worker shares (not in local steps).
"""
from __future__ import annotations

import math

import torch

from prsgd.core.schedule import Heterogeneous
from prsgd.records import rundir
from .base import Algorithm, Option, bad



class Hetero(Algorithm):
    name = "hetero"
    counts_rounds = True
    options = (Option("worker_intervals", tuple[int, ...], (), "Algorithm 3: I_i local steps "
                      "per round for worker i"),
               Option("round_budget_s", float, 0.0, "Algorithm 3: wall-clock seconds of local "
                      "steps per round"))

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        if any(k <= 0 for k in cfg.worker_intervals):
            bad(cfg, "worker_intervals", "every I_i must be a positive integer")
        if cfg.round_budget_s < 0:
            bad(cfg, "round_budget_s", "must be >= 0")
        if cfg.worker_intervals and len(cfg.worker_intervals) != workers:
            bad(cfg, "worker_intervals", f"needs one value per worker ({workers})")

    @classmethod
    def validate_combination(cls, cfg) -> None:
        from prsgd.core.errors import ConfigError
        if cfg.worker_intervals and cfg.round_budget_s:
            raise ConfigError("--round-budget-s: give either --worker-intervals or "
                              "--round-budget-s for --algorithm hetero, not both")
        if cfg.backend == "packed":
            # Packed replicas share one process and one clock: fixed per-worker intervals only.
            if cfg.round_budget_s:
                raise ConfigError("--round-budget-s: needs the horovod backend (packed replicas "
                                  "share one clock); use --worker-intervals")
            if cfg.diagnostics:
                raise ConfigError("--diagnostics: not with --algorithm hetero on the packed "
                                  "backend; use the horovod backend")

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        self.lockstep = len(self.local_workers) > 1   # packed: every worker in this process
        s = self.schedule
        self.total_rounds = s.total_rounds(self.total_steps)
        self.rounds_per_epoch = max(1, self.steps_per_epoch // s.reference)
        self._round_steps: list = []   # this epoch's steps per round (per local worker)

    def make_schedule(self):
        cfg = self.cfg
        intervals = tuple(cfg.worker_intervals) or (cfg.interval,) * self.N
        reference = cfg.interval if cfg.round_budget_s > 0 else max(intervals)
        return Heterogeneous(intervals, self.N, float(cfg.round_budget_s), reference)

    def active(self, loop):
        return self.schedule.lockstep(loop.step_in_round + 1)[0] if self.lockstep else None

    def events(self, loop, round_s: float):
        if self.lockstep:
            return self.schedule.lockstep(loop.step_in_round)[1]
        return super().events(loop, round_s)

    def lr(self, loop) -> float:
        # the lr follows the shared rounds, not the worker's own step count
        return self._lr_at(self.schedule.reference_step(loop.rounds_done, loop.step_in_round))

    def round_done(self, loop) -> None:
        self._round_steps.append(list(self.schedule.intervals) if self.lockstep
                                 else [loop.step_in_round])

    def end_epoch(self, run, loop) -> None:
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
