"""AdaComm (Wang & Joshi, "Adaptive Communication Strategies to Achieve the Best Error-Runtime
Trade-off in Local-Update SGD", SysML 2019): local SGD whose averaging interval shrinks as the
training loss falls. Early on, when the loss is high, long intervals save communication; later
the models' drift between rounds sets the error floor, and shorter intervals lower it. The
paper's rule (its fixed-learning-rate form) for update period l:

    tau_l = ceil( sqrt(F_l / F_0) * tau_0 )

Here tau_0 is --interval; an update period is --adacomm-every-epochs E epochs (the paper uses a
fixed wall-clock time T_0; epochs keep the schedule a pure function of the step count, so that
ranks, the packed backend and a resume agree); F_l is the training loss of the last epoch of
period l-1, reduced over all workers (the metric every rank already holds once per epoch), and
F_0 is the FIRST EPOCH'S training loss (the paper uses the loss of the initial model; the
harness measures no loss before training, and the first epoch's is the earliest every rank
agrees on). Consequences, said plainly:
- the first period always runs at tau_0 and, with E = 1, so does the second (F_1 = F_0);
- the loss is the mean of the workers' local losses over the epoch, not the averaged model's;
- every period ends with a round, so the next starts from an averaged model, as in the paper
  (no extra round when E x steps per epoch is a multiple of the interval);
- tau_l is kept in [1, steps per period]: a longer interval would never be reached before the
  period's closing round; a loss above F_0 lengthens it (the rule as written), a non-finite
  loss keeps the interval (the run stops on it anyway: core/divergence.py);
- the paper's variant for a decaying learning rate (it also scales tau with the learning rate)
  is not implemented: the interval here follows the loss only.

The intervals decided so far and F_0 are the algorithm's state (checkpointed); metrics.csv gets
`epoch_interval`, the interval each epoch ran with. The rounds therefore depend on the run, not
on the config alone: the clock takes them from metrics.csv (`rounds_from_run`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from prsgd.core.schedule import Adaptive
from .base import Algorithm, AlgorithmOptions, bad, option

COLUMN = "epoch_interval"   # metrics.csv: the interval the epoch's rounds used


def next_interval(tau0: int, f0: float, f: float, longest: int, current: int) -> int:
    """AdaComm's rule, ceil(sqrt(f / f0) * tau0), kept in [1, longest]; `current` when the ratio
    is not a finite positive number (a non-finite loss, F_0 = 0)."""
    ratio = f / f0 if f0 > 0 and math.isfinite(f0) else math.nan
    if not (math.isfinite(ratio) and ratio >= 0):
        return current
    return max(1, min(longest, math.ceil(math.sqrt(ratio) * tau0)))


class AdaComm(Algorithm):
    name = "adacomm"
    rounds_from_run = True

    @dataclass
    class Options(AlgorithmOptions):
        adacomm_every_epochs: int = option(1, "AdaComm: recompute the interval every E epochs "
                                              "as ceil(sqrt(loss/first epoch's loss) x "
                                              "--interval)")

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        if cfg.algo.adacomm_every_epochs < 1:
            bad(cfg, "adacomm_every_epochs", "must be a positive integer")

    def __init__(self, cfg, **kw):
        self.f0: float | None = None   # F_0: the first epoch's training loss
        super().__init__(cfg, **kw)

    @property
    def period_steps(self) -> int:
        return self.opts.adacomm_every_epochs * self.steps_per_epoch

    def make_schedule(self):
        return Adaptive((self.cfg.interval,), self.period_steps, self.N)

    def end_epoch(self, run, loop, train_loss: float) -> None:
        done = loop.epoch + 1                    # epochs finished, this one included
        if done == 1:
            self.f0 = train_loss
        if done % self.opts.adacomm_every_epochs == 0:
            s = self.schedule
            self.schedule = s.decided(next_interval(self.cfg.interval, self.f0, train_loss,
                                                    self.period_steps, s.intervals[-1]))

    def metrics(self, loop) -> dict:
        return {COLUMN: self.schedule.intervals[(loop.epoch - 1) // self.opts.adacomm_every_epochs]}

    def state_dict(self) -> dict:
        return {"intervals": list(self.schedule.intervals), "f0": self.f0}

    def load_state_dict(self, d: dict) -> None:
        self.schedule = Adaptive(tuple(int(i) for i in d["intervals"]), self.period_steps, self.N)
        self.f0 = d["f0"]

    @classmethod
    def label(cls, c: dict) -> str:
        every = c.get("adacomm_every_epochs", 1)
        return f"AdaComm I0={c['interval']}" + (f" every {every} ep" if every != 1 else "")

    @classmethod
    def short_label(cls, c: dict) -> str:
        return f"AdaComm I0={c['interval']}"
