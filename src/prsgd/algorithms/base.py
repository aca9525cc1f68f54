"""The `Algorithm` interface: when and over whom to average, which workers step, the learning
rate, what a round does, and the algorithm's own options, validation, label and state.

The train loop asks an algorithm, and nothing else, about the mathematics of a run:

    active = algorithm.active(loop)                 # None = every worker of this process steps
    lr = algorithm.lr(loop)
    ...local step of the active workers (algorithm.on_gradients, if any, runs before SGD)...
    algorithm.on_step(loop, fm, comm)              # default: nothing
    for event in algorithm.events(loop, round_s):  # the pure schedule (schedule.py)
        algorithm.on_round(event, fm, comm)        # default: average in place

Adding an algorithm: subclass `Algorithm` in its own module, give it an `Options` dataclass (its
config section `cfg.algo`; every field a `--flag`, refused with other algorithms; `option(...,
lr=True)` marks a learning rate, checked like --lr), `validate` for its own rules and `label`,
and add one line to `REGISTRY` in `algorithms/__init__.py`. `algorithms/diloco.py` is the worked
example; tests/unit/test_plugins.py adds a toy one at run time.
"""
from __future__ import annotations

import math
import time
import typing
from dataclasses import dataclass, field, fields
from typing import ClassVar

from prsgd.core.errors import ConfigError
from prsgd.core.schedule import lr_at
from .compressed import make_round


@dataclass
class AlgorithmOptions:
    """An algorithm's own config section, `cfg.algo`: subclass it as a dataclass whose fields
    (made with `option`) are the algorithm's options. This base has none."""


def option(default, help: str, *, lr: bool = False):
    """A field of an `Options` dataclass: `--name` on the command line, `cfg.algo.name` in code.
    `help`: one line for --help; `lr`: a learning rate (finite, > 0, representable in the run's
    precision, as --lr)."""
    return field(default=default, metadata={"help": help, "lr": lr})


@dataclass(frozen=True)
class Option:
    """The description of one option (read from an `Options` dataclass)."""
    name: str
    type: type
    default: object
    help: str = ""
    lr: bool = False


def describe(options_cls: type) -> tuple[Option, ...]:
    hints = typing.get_type_hints(options_cls)
    return tuple(Option(f.name, hints[f.name], f.default, f.metadata.get("help", ""),
                        f.metadata.get("lr", False)) for f in fields(options_cls))


@dataclass
class LoopState:
    """Where the loop of this process stands. `step`: the local steps of this process's (first)
    worker; `rounds_done`: global rounds taken part in; `step_in_round`: local steps since the
    last one; `worker_steps`: local steps of all workers together (reduced per epoch);
    `worker_step_counts`: each local worker's own steps when they differ (packed Algorithm 3)."""
    step: int = 0
    epoch: int = 0
    train_seconds: float = 0.0
    rounds_done: int = 0
    step_in_round: int = 0
    worker_steps: int = 0
    worker_step_counts: list = field(default_factory=list)
    per_worker: bool = False   # keep worker_step_counts (only when workers step unequally)
    last_step_at: float = 0.0  # time.monotonic() of the last step's start (see RunLifecycle.guard)

    def advance(self, active: list[bool] | None) -> None:
        """One iteration of the loop: every active local worker made one step."""
        self.last_step_at = time.monotonic()   # not checkpointed: how long a failing wait took
        self.step_in_round += 1
        if active is None:
            self.step += 1
            self.worker_step_counts = [k + 1 for k in self.worker_step_counts]
        else:
            self.worker_step_counts = [k + a for k, a in zip(self.worker_step_counts, active)]
            self.step = self.worker_step_counts[0]   # what rank 0 counts under a process backend

    def state_dict(self) -> dict:
        d = {"step": self.step, "rounds_done": self.rounds_done,
             "step_in_round": self.step_in_round, "worker_steps": self.worker_steps}
        if self.per_worker:
            d["worker_step_counts"] = list(self.worker_step_counts)
        return d

    def load_state_dict(self, d: dict) -> None:
        self.step, self.rounds_done = d["step"], d["rounds_done"]
        self.step_in_round, self.worker_steps = d["step_in_round"], d["worker_steps"]
        if "worker_step_counts" in d:
            self.worker_step_counts = list(d["worker_step_counts"])
        else:
            self.worker_step_counts = [self.step] * len(self.worker_step_counts)


class Algorithm:
    """One algorithm of a run, on this process. Subclasses override what differs."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = AlgorithmOptions   # its config section (`cfg.algo`)
    dynamic_groups: ClassVar[bool] = False       # registers groups after start (Hier-AVG)
    capturable: ClassVar[bool] = False           # its step + rounds may run as CUDA graphs
    packable: ClassVar[bool] = False             # --intervals: several I packed in a process
    counts_rounds: ClassVar[bool] = False        # epochs are counted in shared rounds (Alg. 3)
    # Its rounds depend on the run, not only on the config (AdaComm's follow the loss): the clock
    # then takes the rounds a measured run recorded, never a replay of the schedule.
    rounds_from_run: ClassVar[bool] = False
    compressible: ClassVar[bool] = False         # --compressor: its rounds average ALL workers'
    #                                              models (algorithms/compressed.py)

    def __init__(self, cfg, *, workers: int, local_workers: list[int], steps_per_epoch: int,
                 total_steps: int, backend: str):
        self.cfg, self.opts = cfg, cfg.algo
        self.N, self.local_workers = workers, list(local_workers)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.backend = backend
        self.schedule = self.make_schedule()
        # --compressor: the round that sends compressed deltas (None: the plain average)
        self.compressed = make_round(cfg, len(self.local_workers)) if self.compressible else None

    # --- configuration (class level: no run needed) ---------------------------------------------
    @classmethod
    def options(cls) -> tuple[Option, ...]:
        return describe(cls.Options)

    @classmethod
    def check(cls, cfg, workers: int) -> None:
        """Every rule on this algorithm's config section: the learning-rate checks of every
        `lr` option, then the algorithm's own `validate`."""
        from prsgd.core.config import check_lr
        for opt in cls.options():
            if opt.lr:
                values = getattr(cfg.algo, opt.name)
                for v in values if isinstance(values, tuple) else (values,):
                    check_lr(opt.name, v, cfg.precision, shown=values)
        cls.validate(cfg, workers)

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        """Raise ConfigError naming the flag, for this algorithm's own options and the
        combinations with the rest of the config it cannot run."""

    @classmethod
    def validate_run(cls, cfg, *, steps_per_epoch: int, total_steps: int) -> None:
        """Raise ConfigError naming the flag for an option that cannot fit the run's length
        (`total_steps` local steps per worker, known once the data is loaded)."""

    @classmethod
    def label(cls, c: dict) -> str:
        """The name of a run of it in plots and tables, from its config dict (config.json)."""
        return cls.name

    @classmethod
    def short_label(cls, c: dict) -> str:
        """A compact name for tables whose runs share the algorithm (default: `label`)."""
        return cls.label(c)

    @classmethod
    def clock_shape(cls, c: dict, workers: int) -> dict:
        """What the clock needs beyond N and the step time (clock/model.py `RunShape`), from a
        run's config dict and its N `workers`:
        `local_groups` (the groups of a local round, () if none), `round_steps` (each worker's
        local steps per round when rounds are counted in rounds, not steps) and
        `round_budget_s` (a time budget per round); optionally `overlap_backward` (a round
        that starts inside backward: gradient_allreduce --bucket-mb)."""
        return {"local_groups": (), "round_steps": (), "round_budget_s": 0.0}

    # --- the schedule and the step ----------------------------------------------------------------
    def start(self, fm) -> None:
        """Called once the flat buffer holds the initial model (the same on every worker), before
        a resume restores any state (keep a reference copy here, as DiLoCo does). Default: the
        compressed round's reference, if any."""
        if self.compressed is not None:
            self.compressed.start(fm)

    def make_schedule(self):
        raise NotImplementedError

    def derived(self) -> dict:
        """Values this run computed at `start` that config.json records under `derived` (the
        clock reads them: gradient_allreduce's bucket count). Default: none."""
        return {}

    def groups(self):
        """Groups other than 'all workers' that rounds average over (process sets to create)."""
        return getattr(self.schedule, "subgroups", ())

    def active(self, loop: LoopState) -> list[bool] | None:
        """Which of this process's workers make the next step (None: all)."""
        return None

    def lr(self, loop: LoopState) -> float:
        """The learning rate of the step the loop is making (`loop.step` already counts it)."""
        return self._lr_at(loop.step)

    def _lr_at(self, step: int, **kw) -> float:
        cfg = self.cfg
        return lr_at(step, base_lr=cfg.lr, steps_per_epoch=self.steps_per_epoch,
                     milestones=cfg.lr_milestones, gamma=cfg.lr_gamma, shift=cfg.lr_decay_shift,
                     **kw)

    on_gradients = None   # optional (fm, comm) -> None, between backward and the SGD update

    def events(self, loop: LoopState, round_s: float) -> list:
        """The rounds right after this step (the first local worker's view, as under a process
        backend; the packed replicas of one run share it)."""
        return self.schedule.events(loop.step, self.local_workers[0], round_s)

    def on_step(self, loop: LoopState, fm, comm) -> None:
        """Called after each local step, before its rounds (`events`, `on_round`): what happens
        between rounds (an overlapped round is applied here, algorithms/overlap.py). Default:
        nothing."""

    def on_round(self, event, fm, comm) -> None:
        """What a round does. Default: average the flat buffer in place (params + BN statistics,
        + momentum with --average-momentum), or with --compressor the compressed round."""
        if self.compressed is not None:
            self.compressed.run(event, fm, comm)
        else:
            comm.average_(fm.region(self.cfg.average_momentum), event)

    def round_done(self, loop: LoopState) -> None:
        """Called when a global round ended (after `loop.rounds_done` counted it)."""

    def end_epoch(self, run, loop: LoopState, train_loss: float) -> None:
        """Called by every process at the end of each reported epoch (`run`: the RunView;
        `train_loss`: the epoch's training loss reduced over all workers, the same float on every
        rank; `loop.epoch` is still the epoch that ended, 0-based)."""

    def metrics(self, loop: LoopState) -> dict:
        """This algorithm's own metrics.csv columns for the epoch just recorded (`loop.epoch`
        epochs done); the same keys every epoch. Default: none."""
        return {}

    # --- epochs ------------------------------------------------------------------------------------
    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def epoch_end(self, loop: LoopState) -> int:
        return min((loop.epoch + 1) * self.steps_per_epoch, self.total_steps)

    def epoch_done(self, loop: LoopState, end: int) -> bool:
        return loop.step >= end

    # --- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Its state for the checkpoint (default: the compressed round's, if any)."""
        return {} if self.compressed is None else {"compressed": self.compressed.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        if self.compressed is not None:
            if "compressed" not in d:
                raise ConfigError("--resume: the checkpoint holds no compressed round's state "
                                  "(reference, residuals); pass --restart to start over")
            self.compressed.load_state_dict(d["compressed"])


def bad(cfg, name: str, why: str):
    """Raise the ConfigError of a bad option (of `cfg.algo`, else of `cfg`):
    `--flag: why (got value)`."""
    value = getattr(cfg.algo, name) if hasattr(cfg.algo, name) else getattr(cfg, name)
    raise ConfigError(f"--{name.replace('_', '-')}: {why} (got {value!r})")
