"""Train ResNet20 on CIFAR-10 with local SGD and periodic model averaging (PR-SGD).

    horovodrun -np 8 python -m prsgd.train --preset paper --interval 8 --dataset imagefolder \
        --data ../shared/data/cifar10-jpeg
    python -m prsgd.train --preset smoke --backend packed --workers 2   # one process, N replicas

`build.build(cfg)` makes the parts (backend, data, model, flat buffer, algorithm, run views,
checkpoint); `Trainer` runs them. The loop cannot tell algorithms or backends apart: it steps the
active workers, lets the algorithm run this step's rounds, and once per epoch reduces the metrics,
records and checkpoints. Rank 0 alone writes files.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from prsgd.records import checkpoint as checkpoint_mod
from prsgd.core import config as config_mod
from prsgd.data import dataset as data_mod
from prsgd.core.build import Parts, build
from prsgd.records import ownership
from prsgd.core.config import Config, ConfigError, RunFinished
from prsgd.records.results import RecordError, os_error_message
from prsgd.core.schedule import GLOBAL


class Diverged(RuntimeError):
    """A non-finite training loss; `runs`: the indices of the packed runs that diverged."""

    def __init__(self, message: str, runs=()):
        super().__init__(message)
        self.runs = list(runs)


@torch.no_grad()
def evaluate_packed(model, images: torch.Tensor, labels: torch.Tensor, device, copies: int,
                    batch: int = 1000, channels_last: bool = False):
    """Per-replica (loss sums, numbers correct) of a `replicas=copies` model in eval mode; every
    replica sees the same inputs (copies == 1: an ordinary model)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    loss = torch.zeros(copies, device=device, dtype=torch.float64)
    correct = torch.zeros(copies, device=device, dtype=torch.int64)
    for i in range(0, len(labels), batch):
        x = images[i:i + batch].to(device)
        image = x.dim() == 4
        x = (data_mod.normalize(x) if image else x).to(dtype)
        y = labels[i:i + batch].to(device)
        if copies > 1:
            x = x.repeat(1, copies, 1, 1) if image else x.repeat(1, copies)
        if channels_last and image:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x).to(dtype)                                        # (b, copies, classes)
        loss += F.cross_entropy(out.transpose(1, 2), y[:, None].expand(-1, copies),
                                reduction="none").double().sum(0)
        correct += (out.argmax(-1) == y[:, None]).sum(0)
    return loss, correct, len(labels)


class EpochSums:
    """This epoch's per-replica sums, kept on the device (no host sync per step)."""

    def __init__(self, replicas: int, device):
        self.loss = torch.zeros(replicas, device=device, dtype=torch.float64)
        self.correct = torch.zeros(replicas, device=device, dtype=torch.int64)
        # First step with a non-finite loss, per replica (0 = none): finding where a run diverged
        # costs no host synchronisation per step.
        self.first_bad = torch.zeros(replicas, device=device, dtype=torch.int64)
        self.steps = torch.zeros(replicas, dtype=torch.float64)   # local steps of each replica

    def add(self, out, active, counts: list[int], runs: int):
        n = len(self.steps)
        act = torch.ones(n, dtype=torch.bool) if active is None \
            else torch.tensor(active * runs)
        self.steps += act.double()
        if out is None:          # the captured step sums loss and accuracy itself
            return
        loss, corr = out
        act, own = act.to(loss.device), torch.tensor(counts * runs, device=loss.device)
        self.loss += torch.where(act, loss, 0)
        self.first_bad = torch.where((self.first_bad == 0) & ~torch.isfinite(loss) & act, own,
                                     self.first_bad)
        self.correct += torch.where(act, corr, 0)


class Trainer:
    """One run (or one packed sweep) on this process. `hooks.after_step(trainer, step, events)` is
    called after each local step and its rounds (tests use it to look at the weights)."""

    def __init__(self, cfg: Config | None = None, hooks=None, parts: Parts | None = None):
        self.parts = parts if parts is not None else build(cfg)
        self.hooks = hooks
        p = self.parts
        self.cfg, self.comm, self.runs, self.loop = p.cfg, p.comm, p.runs, p.loop
        self.checkpoint = p.checkpoint
        self.algorithm = self.runs[0].algorithm   # active workers and lr (shared by packed runs)

    # what tests and hooks look at
    fm = property(lambda self: self.parts.fm)
    replicas = property(lambda self: self.parts.replicas)
    rank = property(lambda self: self.comm.rank)
    is_writer = property(lambda self: self.comm.rank == 0)
    step = property(lambda self: self.loop.step)
    epoch = property(lambda self: self.loop.epoch)
    batch_index = property(lambda self: self.parts.feed.batch_index)
    run_dirs = property(lambda self: [r.run_dir for r in self.runs])
    run_dir = property(lambda self: self.runs[0].run_dir)
    num_epochs = property(lambda self: self.algorithm.num_epochs)

    def run_epoch(self):
        """One reported epoch: the loop. Returns ([(loss, acc) per run], last lr)."""
        p, loop, algo = self.parts, self.loop, self.algorithm
        end, sums = algo.epoch_end(loop), EpochSums(p.replicas, p.device)
        diag_s0, lr = self._diag_seconds(), algo.lr(loop)
        t0 = round_start = time.perf_counter()
        while not algo.epoch_done(loop, end):
            active = algo.active(loop)
            loop.advance(active)
            lr = algo.lr(loop)
            t_step, comm0 = time.perf_counter(), self._comm_seconds()
            sums.add(p.steps(loop, lr, active), active, loop.worker_step_counts, len(self.runs))
            self._after_local_step(lr, t_step, comm0)
            now = time.perf_counter()   # this round's length if one more such step were made
            events = self._rounds(loop, (now - round_start) + (now - t_step))
            if any(ev.level == GLOBAL for ev in events):
                algo.round_done(loop)
                loop.rounds_done += 1
                loop.step_in_round = 0
                round_start = time.perf_counter()
            if self.hooks is not None:
                self.hooks.after_step(self, loop.step, events)
        if p.device.type == "cuda":
            torch.cuda.synchronize(p.device)
        loop.train_seconds += time.perf_counter() - t0 - (self._diag_seconds() - diag_s0)
        if p.steps.captured:
            sums.loss, sums.correct = p.runner.loss_sum, p.runner.correct
        results = self._reduce(sums)
        for run in self.runs:
            run.algorithm.end_epoch(run, loop)
        return results, lr

    def _rounds(self, loop, round_s: float) -> list:
        """Every run's rounds after this step; returns run 0's events (what hooks see)."""
        first = None
        for run in self.runs:
            events = run.algorithm.events(loop, round_s)
            for ev in events:
                run.algorithm.on_round(ev, self.parts.fm, run.comm)
            first = events if first is None else first
        return first

    def _after_local_step(self, lr: float, t_step: float, comm0: float):
        for run in self.runs:
            if run.diag is not None:
                run.diag.after_step(lr)
        if self.parts.slowdown > 1.0:
            # A worker `slowdown` times slower: sleep (factor - 1) x this step's compute time.
            if self.parts.device.type == "cuda":
                torch.cuda.synchronize(self.parts.device)
            compute = time.perf_counter() - t_step - (self._comm_seconds() - comm0)
            time.sleep((self.parts.slowdown - 1.0) * max(compute, 0.0))

    def _comm_seconds(self) -> float:
        return self.runs[0].counters.total("seconds")

    def _diag_seconds(self) -> float:
        return sum(r.diag.seconds for r in self.runs if r.diag is not None)

    def _reduce(self, sums: EpochSums):
        """One metric reduction per epoch, per packed run c: [loss sum, correct, batches, samples,
        first non-finite step of each worker]. Workers may have made different numbers of steps
        (Algorithm 3), so each sends its own counts."""
        p, C = self.parts, len(self.runs)
        per = p.replicas // C
        batches = sums.steps.view(C, per).sum(1)
        counts = torch.stack([batches, batches * self.cfg.batch_size], 1)
        bad = torch.zeros(C, p.N, dtype=torch.float64)   # worker w's first bad step at [c, w]
        bad[:, self.comm.workers] = sums.first_bad.cpu().double().view(C, per)
        totals = torch.stack([sums.loss.view(C, per).sum(1),
                              sums.correct.view(C, per).sum(1).double()], 1)
        tot = self.comm.sum_metrics(torch.cat([totals.cpu(), counts, bad], 1))
        self.first_bad_steps = [int(v) for v in tot[:, 4:].reshape(-1)]
        self.loop.worker_steps += int(tot[0, 2])
        return [(float(t[0] / t[2]), float(t[1] / t[3])) for t in tot]

    def averaged_eval(self) -> list[dict]:
        """Loss/accuracy of each run's averaged model, on a copy; local models are untouched."""
        p, cfg, comm = self.parts, self.cfg, self.comm
        for c, run in enumerate(self.runs):
            p.eval_fm.set_replica_(c, run.comm.average_copy(p.fm.state).to(p.eval_fm.flat.device))
        ds, C = p.dataset, len(self.runs)
        shard = slice(comm.rank, None, comm.size)
        sets = [(ds.test_x[shard], ds.test_y[shard])]
        if cfg.eval_train_loss:
            sets.append((ds.train_x[shard], ds.train_y[shard]))
        parts = [evaluate_packed(p.eval_model, x, y, p.device, C,
                                 channels_last=cfg.channels_last) for x, y in sets]
        # (C, sets, 3): per run and set, [loss sum, correct, count]
        local = torch.stack([torch.stack([l.cpu(), c.cpu().double(),
                                          torch.full((C,), float(k), dtype=torch.float64)], 1)
                             for l, c, k in parts], 1)
        outs = []
        for t in comm.sum_metrics(local):
            out = {"test_loss": float(t[0, 0] / t[0, 2]), "test_acc": float(t[0, 1] / t[0, 2])}
            if cfg.eval_train_loss:
                out["full_train_loss"] = float(t[1, 0] / t[1, 2])
            outs.append(out)
        return outs

    def _check_finite(self, results) -> None:
        loss = next((l for l, _ in results if not math.isfinite(l)), results[0][0])
        if math.isfinite(loss):
            return
        loop, N = self.loop, self.parts.N
        first = min((s, w) for w, s in enumerate(self.first_bad_steps) if s) \
            if any(self.first_bad_steps) else (loop.step, None)
        bad = [k for k, (l, _) in enumerate(results) if not math.isfinite(l)]
        where = ""
        if len(self.runs) > 1:   # packed sweep: say which runs diverged (the others stop too)
            where = f" of run(s) {', '.join(self.runs[k].run_id for k in bad)}"
            if first[1] is not None:
                first = (first[0], f"{first[1] % N} of {self.runs[first[1] // N].run_id}")
        raise Diverged(f"training loss is {loss} in epoch {loop.epoch}{where}: first "
                       f"non-finite loss at step {first[0]} (worker {first[1]}); the run "
                       f"stopped at step {loop.step}", runs=bad)

    def train(self) -> Path:
        """Run every epoch; writers close on every exit path."""
        try:
            epochs = self.num_epochs
            while self.loop.epoch < epochs:
                results, lr = self.run_epoch()
                self.loop.epoch += 1
                self._check_finite(results)
                self._record(results, lr, last=self.loop.epoch == epochs)
            return self.run_dir
        finally:
            self.close()

    def _record(self, results, lr: float, last: bool) -> None:
        cfg, loop = self.cfg, self.loop
        evals = None
        if cfg.eval_every and (loop.epoch % cfg.eval_every == 0 or last):
            evals = self.averaged_eval()
        for k, (run, (loss, acc)) in enumerate(zip(self.runs, results)):
            if run.diag is not None:
                drow = run.diag.epoch_row(loop.epoch, loop.step, run.cfg.interval)
                if run.diag_writer is not None:
                    run.diag_writer.write(drow)
        for k, (run, (loss, acc)) in enumerate(zip(self.runs, results)):
            row = run.metrics_row(loop, loss, acc, lr, evals[k] if evals else None)
            run.rows.append(dict(row))
            if run.writer is not None:
                run.writer.write(row)
                if cfg.progress:
                    test = f" test_acc {row['test_acc']:.4f}" if "test_acc" in row else ""
                    print(f"[{run.run_id}] epoch {loop.epoch}/{self.num_epochs} step {loop.step} "
                          f"loss {loss:.4f} acc {acc:.4f}{test} lr {lr:g} "
                          f"rounds {run.counters.total('rounds')} {loop.train_seconds:.1f}s",
                          flush=True)
        self.checkpoint.end_of_epoch(last=last)

    def close(self) -> None:
        for run in self.runs:
            run.close()


def _say_resumed(trainer: Trainer) -> None:
    if trainer.checkpoint.resumed_from is not None and trainer.is_writer and trainer.cfg.progress:
        print(f"[{trainer.cfg.run_id}] resumed from the checkpoint of epoch "
              f"{trainer.checkpoint.resumed_from} (step {trainer.step})", flush=True)


def _train(cfg: Config, hooks, backend_comm=None) -> Trainer:
    trainer = Trainer(hooks=hooks, parts=build(cfg, backend_comm))
    try:
        _say_resumed(trainer)
        with trainer.checkpoint.guard(Diverged):  # status.json: done/diverged/interrupted/failed
            trainer.train()
    finally:
        trainer.close()
    return trainer


def run(cfg: Config, hooks=None, comm=None, release: bool = False) -> Path | None:
    """Train; returns the run directory on the writing rank, None on the others. `comm`: an
    mpi4py communicator for `hvd.init(comm=...)` (prsgd.experiments.mpi_sweep: one per interval).
    `release`: the process ends after this run, so release the backend: torch.distributed's
    process group left to the interpreter's exit can abort a rank with SIGABRT ("terminate called
    without an active exception", seen once in our CI; pytorch/pytorch#190489). Only after a run
    that ended normally: on a failure the peers may still be in a collective (torchtitan#1342)."""
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


def main(argv=None) -> int:
    try:
        cfg = config_mod.from_args(argv)
        if cfg.intervals:
            cfg.validate()  # --intervals without --backend packed is an error, not a sweep
            for run_dir in train_packed_sweep(cfg):
                print(f"run directory: {run_dir}")
            return 0
        run_dir = run(cfg, release=True)
    except (ConfigError, data_mod.DataError, RecordError) as e:
        print(f"prsgd.train: error: {e}", file=sys.stderr)
        return 2
    except RunFinished as e:   # --resume of a finished run trains nothing
        print(f"prsgd.train: {e}", file=sys.stderr)
        return e.exit_code
    except Diverged as e:
        print(f"prsgd.train: diverged: {e}", file=sys.stderr)
        return 3
    except checkpoint_mod.Interrupted as e:
        print(f"prsgd.train: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:   # an I/O failure: one line naming the path (status.json: failed)
        print(f"prsgd.train: error: {os_error_message(e)}", file=sys.stderr)
        return 1
    finally:
        ownership.release_all()   # in-process callers (tests) may start another run
    if run_dir is not None:
        print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
