"""One run's view of the process: its config, run directory, algorithm, communicator (its own
counters), diagnostics, writers, metric rows and status. A packed sweep has one view per packed
run; an ordinary run has one. Only the writing process (rank 0) opens files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prsgd.backends.packed import PACKED_RUNS
from prsgd.core.diagnostics import DIAG_COLUMNS, corollary1
from prsgd.records import rundir
from prsgd.records.results import portable_path, provenance
from prsgd.records.rundir import MetricsWriter


@dataclass
class RunView:
    index: int                 # which packed run (0 for an ordinary run)
    cfg: object                # exactly what a separate run of it would have been given
    run_dir: Path
    algorithm: object          # algorithms.base.Algorithm
    comm: object               # the run's Comm (wrapped by its Diagnostics with --diagnostics)
    is_writer: bool
    diag: object = None        # diagnostics.Diagnostics or None
    rows: list = field(default_factory=list)   # metric rows so far (identical on every rank)
    comm_seconds_by_process: list = field(default_factory=list)  # set by each epoch's reduction
    writer: MetricsWriter | None = None
    diag_writer: MetricsWriter | None = None

    @property
    def run_id(self) -> str:
        return self.cfg.run_id

    @property
    def counters(self):
        return self.comm.counters

    def open_writers(self) -> None:
        if self.is_writer:
            self.writer = MetricsWriter(rundir.metrics_path(self.run_dir))
            if self.diag is not None:
                self.diag_writer = MetricsWriter(rundir.diagnostics_path(self.run_dir),
                                                 DIAG_COLUMNS)

    def close(self) -> None:
        for w in (self.writer, self.diag_writer):
            if w is not None:
                w.close()
        self.writer = self.diag_writer = None

    def metrics_row(self, loop, loss: float, acc: float, lr: float, evals: dict | None) -> dict:
        """One row of metrics.csv: its keys, in this order, are the file's columns (a new metric is
        one new key here). The evaluation's columns are empty in epochs without one."""
        c, evals = self.counters, evals or {}
        return {"epoch": loop.epoch, "step": loop.step, "train_seconds": loop.train_seconds,
                "train_loss": loss, "train_acc": acc, "lr": lr,
                "rounds": c.rounds["global"], "rounds_local": c.rounds["local"],
                "bytes": c.total("bytes"),
                "compute_seconds": loop.train_seconds - c.total("seconds"),
                "comm_seconds": c.total("seconds"),
                "test_loss": evals.get("test_loss"), "test_acc": evals.get("test_acc"),
                "full_train_loss": evals.get("full_train_loss"),
                # the family issue: counters of the local level (Hier-AVG), all workers' steps
                "bytes_local": c.bytes["local"], "comm_seconds_local": c.seconds["local"],
                "worker_steps": loop.worker_steps,
                # issue 19: payload bytes one worker received, and its sent `bytes` by collective
                # (a compressed round: payloads allgathered or cast-allreduced, BN stats exact)
                "bytes_received": c.total("received"),
                "bytes_allreduce": c.collective_bytes.get("allreduce", 0),
                "bytes_allgather": c.collective_bytes.get("allgather", 0),
                # the least and the most seconds any process spent averaging (rank 0's are
                # comm_seconds): max - min is time spent waiting for the slowest worker
                "comm_seconds_min": min(self.comm_seconds_by_process),
                "comm_seconds_max": max(self.comm_seconds_by_process),
                **self.algorithm.metrics(loop)}   # the algorithm's own (AdaComm: its interval)

    def write_config(self, *, sweep_cfg, derived: dict, world_size: int, device, dataset,
                     resumed_from: int | None, packed: dict | None,
                     comm: dict | None = None, resume_changes: dict | None = None) -> None:
        """config.json: the run's config, derived values, provenance, Corollary 1; a resume keeps
        the original provenance and logs itself, with the operational fields it changed (any
        other change was refused: config.resume_differences)."""
        if not self.is_writer:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        devices = [torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({os.cpu_count()} cores)"]
        derived = dict(derived)
        if packed is not None:  # train_seconds is then the wall clock of all packed runs together
            derived[PACKED_RUNS] = dict(packed, index=self.index)
        cfg = self.cfg
        meta = {
            # Paths as the record may keep them (no path of this machine in results/).
            "config": dict(cfg.to_dict(), data=portable_path(cfg.data), out=portable_path(cfg.out)),
            "derived": derived,
            "provenance": dict(provenance(world_size=world_size, devices=devices, dataset=dataset),
                               comm=comm or {}),   # the backend as it ran (Comm.provenance)
            "theory": corollary1(derived["total_steps"], derived["workers"], cfg.interval),
        }
        if resumed_from is not None and rundir.has_config(self.run_dir):
            old = rundir.read_config(self.run_dir)
            old.setdefault("resumes", []).append(
                {"from_epoch": resumed_from, "provenance": meta["provenance"],
                 "changed": resume_changes or {}})
            meta = old
        rundir.write_config(self.run_dir, meta)
