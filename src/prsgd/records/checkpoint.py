"""Runs that survive: open a run's directories (records/policy.py decides, every rank follows),
restore a checkpoint into the parts of a built trainer, and save one every `--checkpoint-every`
epochs (records/state.py: what the file holds).

Under Horovod rank 0 owns the run directory: it gathers every rank's state to write one file and
scatters it back on resume, so a shared file system is not needed.

A packed sweep (`--intervals`: C runs in one process) has C run directories and ONE checkpoint,
in the first: the C runs share one flat buffer. It holds every run's metric rows and counters;
status.json is written into every run directory (records/lifecycle.py), and a resume rewrites
every metrics.csv.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from prsgd.core.config import RunFinished
from prsgd.core.errors import ConfigError
from prsgd.records import ownership, rundir
from prsgd.records.policy import open_run_dirs
from prsgd.records.results import os_error_message
from prsgd.records.state import FORMAT, checkpoint_rows, effective_config, save_checkpoint


class Checkpointer:
    """Checkpoint and resume of a run's directories (one per packed run; the first holds the
    checkpoint). `parts`: name -> stateful part of this process (`state_dict` and
    `load_state_dict`). Collective methods (`prepare`, `save`, `end_of_epoch`) must be called by
    every rank in the same order."""

    def __init__(self, *, cfg, comm, runs, parts: dict, loop, workers: int, dataset):
        self.cfg, self.comm, self.runs, self.parts, self.loop = cfg, comm, runs, parts, loop
        self.N, self.dataset = workers, dataset
        self.is_writer = comm.rank == 0
        self.run_dirs = [Path(r.run_dir) for r in runs]
        self.run_dir = self.run_dirs[0]               # holds the checkpoint
        self.resumed_from: int | None = None
        self.saved_epoch: int | None = None   # epoch of the checkpoint on disk
        self.owners: list = []                # ownership locks of the run dirs (writer only)
        self.resume_changes: dict = {}        # operational fields changed by this --resume

    @property
    def path(self) -> Path:
        return rundir.checkpoint_path(self.run_dir)

    def prepare(self) -> dict | None:
        """Refuse a directory holding another run, clear it on --restart, load it on --resume.
        Rank 0 decides and every rank gets the same answer, so an error stops all ranks alike.
        Returns the checkpoint (restored into the parts already) or None for a fresh start."""
        answer = None
        if self.is_writer:
            try:
                # i14: one live owner per run directory, taken before anything is written.
                self.owners = ownership.acquire_all(self.run_dirs)
                ck, self.resume_changes = open_run_dirs(self.cfg, self.run_dirs, self.N,
                                                        self.dataset)
                answer = ("ok", ck)
            except ownership.OwnedElsewhere as e:
                answer = ("error", f"--out/--run-id: {e}")
            except ConfigError as e:
                answer = ("error", str(e))
            except RunFinished as e:
                answer = ("finished", str(e), e.exit_code)
            except OSError as e:
                answer = ("error", os_error_message(e))
        answer = self.comm.broadcast_object(answer)
        if answer[0] == "error":
            raise ConfigError(answer[1])
        if answer[0] == "finished":
            raise RunFinished(answer[1], answer[2])
        ck = answer[1]
        if ck is not None:
            self._restore(ck)
        return ck

    def _restore(self, ck: dict) -> None:
        """Every part loads its own state (the run variables first: `loop` may refine them)."""
        loop = self.loop
        loop.step, loop.epoch, loop.train_seconds = ck["step"], ck["epoch"], ck["train_seconds"]
        mine = ck["ranks"][self.comm.rank]
        missing = sorted(set(self.parts) - set(mine))
        if missing:
            raise ConfigError(f"--resume: {self.path} lacks the state of {', '.join(missing)}; "
                              "pass --restart to start the run over")
        for name, part in self.parts.items():
            part.load_state_dict(mine[name])
        for run, rows in zip(self.runs, checkpoint_rows(ck)):
            run.rows = [dict(r) for r in rows]
        self.resumed_from = self.saved_epoch = ck["epoch"]

    def save(self) -> None:
        """Collective: gather every rank's named state dict to rank 0, which writes the file."""
        local = {name: part.state_dict() for name, part in self.parts.items()}
        ranks = self.comm.allgather_object(local)
        if not self.is_writer:
            return
        loop = self.loop
        ck = {"format": FORMAT, "config": json.dumps(effective_config(self.cfg, self.N)),
              "dataset_sha256": self.dataset.checksum, "epoch": loop.epoch, "step": loop.step,
              "train_seconds": loop.train_seconds, "rows": self.runs[0].rows,
              "packed_rows": [r.rows for r in self.runs[1:]], "ranks": ranks,
              "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        save_checkpoint(ck, self.path)
        self.saved_epoch = loop.epoch

    def end_of_epoch(self, last: bool) -> bool:
        """Called by every rank after the epoch's rows are appended to each run's `rows`;
        True when it saved a checkpoint."""
        every = self.cfg.checkpoint_every
        if every and (self.loop.epoch % every == 0 or last):
            self.save()
            return True
        return False

    def release(self) -> None:
        """Let go of the run directories (the end of the run, however it ended)."""
        for owner in self.owners:
            owner.release()
