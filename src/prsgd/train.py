"""Train ResNet20 on CIFAR-10 with local SGD and periodic model averaging (PR-SGD).

    horovodrun -np 8 python -m prsgd.train --preset paper --interval 8 --dataset imagefolder \
        --data ../shared/data/cifar10-jpeg
    python -m prsgd.train --preset smoke --backend packed --workers 2   # one process, N replicas

`build.build(cfg)` makes the parts (backend, data, model, flat buffer, algorithm, run views,
checkpoint); `core.loop.Trainer` runs them. This module holds the entry points: `main` (the
command line), `run` (one run, also under mpi_sweep) and `train_packed_sweep`.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from prsgd.records.lifecycle import Interrupted
from prsgd.core import config as config_mod
from prsgd.data import dataset as data_mod
from prsgd.core import report
from prsgd.core.build import build
from prsgd.core.divergence import Diverged
from prsgd.core.loop import Trainer
from prsgd.records import ownership
from prsgd.core.config import Config, ConfigError, RunFinished
from prsgd.records.results import os_error_message
from prsgd.records.rundir import RecordError


def _say_hello(trainer: Trainer) -> None:
    """Rank 0's start banner, and where a resumed run continues from."""
    if not (trainer.is_writer and trainer.cfg.progress):
        return
    for line in report.banner(trainer.parts):
        print(line, flush=True)
    if trainer.checkpoint.resumed_from is not None:
        print(f"[{trainer.cfg.run_id}] resumed from the checkpoint of epoch "
              f"{trainer.checkpoint.resumed_from} (step {trainer.step})", flush=True)


def _train(cfg: Config, hooks, backend_comm=None) -> Trainer:
    trainer = Trainer(hooks=hooks, parts=build(cfg, backend_comm))
    try:
        _say_hello(trainer)
        with trainer.lifecycle.guard(Diverged):  # status.json: done/diverged/interrupted/failed
            trainer.train()
    finally:
        trainer.close()
    return trainer


def run(cfg: Config, hooks=None, comm=None, release: bool = False) -> Path | None:
    """Train; returns the run directory on the writing rank, None on the others. `comm`: an
    mpi4py communicator for `hvd.init(comm=...)` (prsgd.experiments.mpi_sweep: one per interval).
    `release`: the process ends after this run, so release the backend (torch.distributed's
    destroy_process_group) before the interpreter's teardown. (The SIGABRT once blamed on the
    group left to that teardown, "terminate called without an active exception", was the
    launcher watchdog's thread freeing the trainer during finalisation: see launch/watchdog.py
    `Watchdog.stop`.) Only after a run that ended normally: on a failure the peers may still be
    in a collective (torchtitan#1342)."""
    trainer = _train(cfg, hooks, comm)
    if release:
        trainer.comm.shutdown()
    return trainer.run_dir if trainer.is_writer else None


def train_packed_sweep(cfg: Config, intervals=None, hooks=None) -> list[Path]:
    """Train one packed run per interval in ONE process (replicas = len(intervals) * workers);
    returns their run directories `OUT/RUN_ID-I{interval}`, each with its own config.json and
    metrics.csv, written exactly as a separate run of that interval would write them.

    `cfg`: the common config (`backend` is forced to packed; `workers` N must be set); `intervals`
    defaults to `cfg.intervals`; `cfg.run_id` may hold `{interval}` (see `packed_run_id`). With
    `cfg.resume` it continues from the checkpoint in the first run's directory. Same seed =>
    every packed run sees the batches the separate run (or the Horovod ranks) would see, from
    the same initial weights.
    """
    intervals = tuple(intervals if intervals is not None else cfg.intervals)
    if not intervals:
        raise ConfigError("--intervals: give at least one interval, e.g. --intervals 1,4,8,16,32")
    from prsgd.backends import packing_backend
    cfg = dataclasses.replace(cfg, backend=packing_backend(), intervals=intervals,
                              interval=intervals[0])
    return _train(cfg, hooks).run_dirs


def exit_code(e: BaseException) -> int | None:
    """How a run that raised `e` ends: one line on stderr and the exit code (2 bad input,
    3 diverged, 128 + signal interrupted, 1 an I/O failure, a finished run's own), or None for
    an error that is not one of these (a bug: let its traceback show). train.main and each
    group of prsgd.mpi_sweep end the same way."""
    if isinstance(e, (ConfigError, data_mod.DataError, RecordError)):
        line, code = f"error: {e}", 2
    elif isinstance(e, RunFinished):    # --resume of a finished run trains nothing
        line, code = str(e), e.exit_code
    elif isinstance(e, Diverged):
        line, code = f"diverged: {e}", 3
    elif isinstance(e, Interrupted):
        line, code = str(e), e.exit_code
    elif isinstance(e, OSError):   # an I/O failure: one line naming the path (status.json: failed)
        line, code = f"error: {os_error_message(e)}", 1
    else:
        return None
    print(f"prsgd.train: {line}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    try:
        cfg = config_mod.from_args(argv)
        if cfg.intervals:
            cfg.validate()  # --intervals without --backend packed is an error, not a sweep
            for run_dir in train_packed_sweep(cfg):
                print(f"run directory: {run_dir}")
            return 0
        run_dir = run(cfg, release=True)
    except BaseException as e:
        code = exit_code(e)
        if code is None:
            raise
        return code
    finally:
        ownership.release_all()   # in-process callers (tests) may start another run
    if run_dir is not None:
        print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
