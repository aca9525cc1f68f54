"""Algorithm 1 (PR-SGD) and the algorithms that are it with another schedule: K-AVG, one-shot
averaging, post-local SGD, Algorithm 2 (varying averaging epochs). Their rounds average every
worker's model, so each may send compressed deltas (`compressible`, algorithms/compressed.py)."""
from __future__ import annotations

from dataclasses import dataclass

from prsgd.core import schedule
from prsgd.core.schedule import OneShot, Periodic, Varying
from .base import Algorithm, AlgorithmOptions, bad, option
from .overlap import DelayedRound
from .overlap_compressed import DelayedCompressedRound

# Largest local-step count a schedule may compute (Algorithm 2's grown epoch lengths are ints).
MAX_STEPS = 2**62


class PRSGD(Algorithm):
    """Algorithm 1: every I local steps, all workers average; with --overlap-delay TAU > 0 the
    average is started asynchronously and applied TAU steps later (algorithms/overlap.py; with
    --compressor, the compressed round delayed: algorithms/overlap_compressed.py)."""
    name = "prsgd"
    capturable = True
    packable = True
    compressible = True

    @dataclass
    class Options(AlgorithmOptions):
        overlap_delay: int = option(0, "TAU: start each round's average without waiting and "
                                       "apply it TAU local steps later, keeping the steps made "
                                       "meanwhile (0 = Algorithm 1; must be < --interval; "
                                       "with --compressor the compressed round is delayed)")

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        tau = _delay(cfg.algo)
        if tau < 0:
            bad(cfg, "overlap_delay", "must be >= 0 (0 = average at once, Algorithm 1)")
        if not tau:
            return
        for flag, why in (("cuda_graph", "captured rounds are plain averages"),
                          ("diagnostics", "the consensus distance is measured on synchronous "
                                          "rounds")):
            if getattr(cfg, flag):
                bad(cfg, "overlap_delay", f"not with --{flag.replace('_', '-')} ({why})")
        flag, interval = (("every --intervals I", min(cfg.intervals)) if cfg.intervals
                          else ("--interval", cfg.interval))
        if tau >= interval:
            bad(cfg, "overlap_delay", f"must be < {flag} {interval} (a round is applied "
                "before the next one starts)")

    def make_schedule(self):
        return Periodic(self.cfg.interval, self.N)

    def start(self, fm) -> None:
        super().start(fm)   # the compressed round's reference (--compressor)
        tau = _delay(self.opts)
        if tau and self.compressed is not None:   # algorithms/overlap_compressed.py
            self.overlap = DelayedCompressedRound(tau, self.total_steps, self.compressed)
            self._region = lambda: fm   # the compressed round reads params and stats apart
        else:
            self.overlap = DelayedRound(tau, self.total_steps) if tau else None
            self._region = lambda: fm.region(self.cfg.average_momentum)
        self._step = 0

    def on_step(self, loop, fm, comm) -> None:
        self._step = loop.step
        if self.overlap is not None:
            self.overlap.apply_due(loop.step, self._region(), comm)

    def on_round(self, event, fm, comm) -> None:
        if self.overlap is None:   # TAU = 0: Algorithm 1's round, the same code path
            return super().on_round(event, fm, comm)
        self.overlap.start(self._step, event, self._region(), comm)
        self.overlap.apply_due(self._step, self._region(), comm)   # round at the last step

    def state_dict(self) -> dict:
        d = super().state_dict()   # the compressed round's (--compressor)
        if self.overlap is not None:
            d["overlap"] = self.overlap.state_dict()
        return d

    def load_state_dict(self, d: dict) -> None:
        super().load_state_dict(d)
        if self.overlap is not None:
            self.overlap.load_state_dict(d.get("overlap", {}), self._region())

    @classmethod
    def label(cls, c: dict) -> str:
        return f"PR-SGD (Alg 1) I={c['interval']}{_overlap(c)}"

    @classmethod
    def short_label(cls, c: dict) -> str:
        return f"I={c['interval']}{_overlap(c)}"

    @classmethod
    def clock_shape(cls, c: dict, workers: int) -> dict:
        """`overlap_steps`: the local steps a round's collective runs behind (clock/model.py)."""
        return {**super().clock_shape(c, workers), "overlap_steps": c.get("overlap_delay") or 0}


def _delay(opts) -> int:
    """TAU of an Algorithm 1 options section (a subclass with its own Options has none: 0)."""
    return getattr(opts, "overlap_delay", 0)


def _overlap(c: dict) -> str:
    return f" overlap={c['overlap_delay']}" if c.get("overlap_delay") else ""


class KAVG(PRSGD):
    """K-AVG (Zhou & Cong 2018) averages all workers every K local steps: that IS Algorithm 1
    with I = K, under its own name."""
    name = "kavg"

    @classmethod
    def label(cls, c: dict) -> str:
        return f"K-AVG K={c['interval']}{_overlap(c)}"


class OneShotAveraging(Algorithm):
    """Only after the last step."""
    name = "one_shot"
    compressible = True

    def make_schedule(self):
        return OneShot(self.total_steps, self.N)

    @classmethod
    def label(cls, c: dict) -> str:
        return "one-shot"


class PostLocal(Algorithm):
    """Post-local SGD (Lin et al. 2020): every step for the first E epochs, then every I."""
    name = "post_local"
    compressible = True

    @dataclass
    class Options(AlgorithmOptions):
        local_epochs: int = option(0, "I = 1 (average every step) for this many global epochs "
                                      "first, then every I")

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        if cfg.algo.local_epochs < 0:
            bad(cfg, "local_epochs", "must be >= 0")

    def make_schedule(self):
        return schedule.PostLocal(self.opts.local_epochs * self.steps_per_epoch,
                                  self.cfg.interval, self.N)

    @classmethod
    def label(cls, c: dict) -> str:
        return f"post-local E={c['local_epochs']} I={c['interval']}"


class VaryingEpochs(Algorithm):
    """Algorithm 2: averaging epochs of K^1, K^2, ... local steps, optionally with an lr per
    averaging epoch."""
    name = "varying"
    compressible = True

    @dataclass
    class Options(AlgorithmOptions):
        epoch_lengths: tuple[int, ...] = option((), "K^1,K^2,...: local steps of each averaging "
                                                    "epoch")
        epoch_lrs: tuple[float, ...] = option((), "the lr of each averaging epoch (one per "
                                                  "--epoch-lengths entry)", lr=True)
        epoch_growth: float = option(1.0, "after the list, each K^s = previous K x this")

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        o = cfg.algo
        if any(k <= 0 for k in o.epoch_lengths):
            bad(cfg, "epoch_lengths", "every K^s must be a positive integer")
        if any(k > MAX_STEPS for k in o.epoch_lengths):
            bad(cfg, "epoch_lengths", f"every K^s must be at most {MAX_STEPS} steps")
        if o.epoch_lrs and len(o.epoch_lrs) != len(o.epoch_lengths):
            bad(cfg, "epoch_lrs", "needs one lr per entry of --epoch-lengths")
        if o.epoch_growth < 1:
            bad(cfg, "epoch_growth", "must be >= 1 (1 repeats the last epoch length)")
        if not o.epoch_lengths:
            bad(cfg, "epoch_lengths", "--algorithm varying needs --epoch-lengths K1,K2,...")
        # The first grown length must be a step count (a huge growth overflowed to inf).
        if o.epoch_lengths[-1] * o.epoch_growth > MAX_STEPS:
            bad(cfg, "epoch_growth", f"grows the last epoch length beyond {MAX_STEPS} steps")

    def make_schedule(self):
        return Varying(tuple(self.opts.epoch_lengths), self.N, float(self.opts.epoch_growth))

    def lr(self, loop) -> float:
        return self._lr_at(loop.step, varying=self.schedule, epoch_lrs=self.opts.epoch_lrs)

    @classmethod
    def label(cls, c: dict) -> str:
        grow = f" x{c['epoch_growth']:g}" if c.get("epoch_growth", 1) != 1 else ""
        return f"Alg 2 K={','.join(map(str, c['epoch_lengths']))}{grow}"
