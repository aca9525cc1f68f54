"""Algorithm 1 (PR-SGD) and the algorithms that are it with another schedule: K-AVG, one-shot
averaging, post-local SGD, Algorithm 2 (varying averaging epochs)."""
from __future__ import annotations

from prsgd.core import schedule
from prsgd.core.schedule import OneShot, Periodic, Varying
from .base import Algorithm, Option, bad


class PRSGD(Algorithm):
    """Algorithm 1: every I local steps, all workers average."""
    name = "prsgd"
    capturable = True
    packable = True

    def make_schedule(self):
        return Periodic(self.cfg.interval, self.N)

    @classmethod
    def label(cls, c: dict) -> str:
        return f"PR-SGD (Alg 1) I={c['interval']}"


class KAVG(PRSGD):
    """K-AVG (Zhou & Cong 2018) averages all workers every K local steps: that IS Algorithm 1
    with I = K, under its own name."""
    name = "kavg"

    @classmethod
    def label(cls, c: dict) -> str:
        return f"K-AVG K={c['interval']}"


class OneShotAveraging(Algorithm):
    """Only after the last step."""
    name = "one_shot"

    def make_schedule(self):
        return OneShot(self.total_steps, self.N)

    @classmethod
    def label(cls, c: dict) -> str:
        return "one-shot"


class PostLocal(Algorithm):
    """Post-local SGD (Lin et al. 2020): every step for the first E epochs, then every I."""
    name = "post_local"
    options = (Option("local_epochs", int, 0, "post-local SGD: I = 1 for this many global "
                      "epochs first"),)

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        if cfg.local_epochs < 0:
            bad(cfg, "local_epochs", "must be >= 0")

    def make_schedule(self):
        return schedule.PostLocal(self.cfg.local_epochs * self.steps_per_epoch,
                                  self.cfg.interval, self.N)

    @classmethod
    def label(cls, c: dict) -> str:
        return f"post-local E={c['local_epochs']} I={c['interval']}"


class VaryingEpochs(Algorithm):
    """Algorithm 2: averaging epochs of K^1, K^2, ... local steps, optionally with an lr per
    averaging epoch."""
    name = "varying"
    options = (Option("epoch_lengths", tuple[int, ...], (), "Algorithm 2: K^s local steps per "
                      "averaging epoch"),
               Option("epoch_lrs", tuple[float, ...], (), "Algorithm 2: lr gamma^s per "
                      "averaging epoch"),
               Option("epoch_growth", float, 1.0, "Algorithm 2: after the list, each K^s = "
                      "previous * growth"))

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        if any(k <= 0 for k in cfg.epoch_lengths):
            bad(cfg, "epoch_lengths", "every K^s must be a positive integer")
        if cfg.epoch_lrs and len(cfg.epoch_lrs) != len(cfg.epoch_lengths):
            bad(cfg, "epoch_lrs", "needs one lr per entry of --epoch-lengths")
        if cfg.epoch_growth < 1:
            bad(cfg, "epoch_growth", "must be >= 1 (1 repeats the last epoch length)")
        if not cfg.epoch_lengths:
            bad(cfg, "epoch_lengths", "--algorithm varying needs --epoch-lengths K1,K2,...")

    def make_schedule(self):
        return Varying(tuple(self.cfg.epoch_lengths), self.N, float(self.cfg.epoch_growth))

    def lr(self, loop) -> float:
        return self._lr_at(loop.step, varying=self.schedule, epoch_lrs=self.cfg.epoch_lrs)

    @classmethod
    def label(cls, c: dict) -> str:
        grow = f" x{c['epoch_growth']:g}" if c.get("epoch_growth", 1) != 1 else ""
        return f"Alg 2 K={','.join(map(str, c['epoch_lengths']))}{grow}"
