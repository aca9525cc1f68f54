"""The training loop of one run (or one packed sweep) on this process.

The loop cannot tell algorithms or backends apart: it steps the active workers, lets the algorithm
run this step's rounds, and once per epoch reduces the metrics, checks for divergence
(core/divergence.py), evaluates the averaged models (core/evaluation.py), records and
checkpoints. Rank 0 alone writes files and prints (core/report.py).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from prsgd.core import report
from prsgd.core.build import Parts, build
from prsgd.core.config import Config
from prsgd.core.divergence import check_finite
from prsgd.core.evaluation import averaged_eval
from prsgd.core.schedule import GLOBAL


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
        self.checkpoint, self.lifecycle = p.checkpoint, p.lifecycle
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
        for run, (loss, _) in zip(self.runs, results):
            run.algorithm.end_epoch(run, loop, loss)
        return results, lr

    def _rounds(self, loop, round_s: float) -> list:
        """Every run's `on_step` and rounds after this step; returns run 0's events (what hooks
        see)."""
        first = None
        for run in self.runs:
            run.algorithm.on_step(loop, self.parts.fm, run.comm)
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
        first non-finite step of each worker, averaging seconds of each process]. Workers may have
        made different numbers of steps (Algorithm 3), so each sends its own counts."""
        p, C = self.parts, len(self.runs)
        per = p.replicas // C
        batches = sums.steps.view(C, per).sum(1)
        counts = torch.stack([batches, batches * self.cfg.batch_size], 1)
        bad = torch.zeros(C, p.N, dtype=torch.float64)   # worker w's first bad step at [c, w]
        bad[:, self.comm.workers] = sums.first_bad.cpu().double().view(C, per)
        # Each process's seconds in averaging so far: rank 0's alone hide how much of them was
        # waiting for the slowest worker (the process that arrives last waits least).
        comm_s = torch.zeros(C, self.comm.size, dtype=torch.float64)
        comm_s[:, self.comm.rank] = torch.tensor([r.counters.total("seconds") for r in self.runs],
                                                 dtype=torch.float64)
        totals = torch.stack([sums.loss.view(C, per).sum(1),
                              sums.correct.view(C, per).sum(1).double()], 1)
        tot = self.comm.sum_metrics(torch.cat([totals.cpu(), counts, bad, comm_s], 1))
        self.first_bad_steps = [int(v) for v in tot[:, 4:4 + p.N].reshape(-1)]
        for run, per_process in zip(self.runs, tot[:, 4 + p.N:]):
            run.comm_seconds_by_process = per_process.tolist()
        self.loop.worker_steps += int(tot[0, 2])
        return [(float(t[0] / t[2]), float(t[1] / t[3])) for t in tot]

    def train(self) -> Path:
        """Run every epoch; writers close on every exit path."""
        self.started, self.first_epoch = time.monotonic(), self.loop.epoch
        try:
            epochs = self.num_epochs
            while self.loop.epoch < epochs:
                results, lr = self.run_epoch()
                self.loop.epoch += 1
                check_finite(results, self.first_bad_steps, self.loop, self.runs, self.parts.N)
                self._record(results, lr, last=self.loop.epoch == epochs)
            return self.run_dir
        finally:
            self.close()

    def averaged_eval(self) -> list[dict]:
        return averaged_eval(self.parts, self.runs, self.comm, self.cfg)

    def _record(self, results, lr: float, last: bool) -> None:
        cfg, loop = self.cfg, self.loop
        evals = None
        if cfg.eval_every and (loop.epoch % cfg.eval_every == 0 or last):
            evals = self.averaged_eval()
        for run in self.runs:
            if run.diag is not None:
                drow = run.diag.epoch_row(loop.epoch, loop.step, run.cfg.interval)
                if run.diag_writer is not None:
                    run.diag_writer.write(drow)
        elapsed = time.monotonic() - self.started
        for k, (run, (loss, acc)) in enumerate(zip(self.runs, results)):
            row = run.metrics_row(loop, loss, acc, lr, evals[k] if evals else None)
            run.rows.append(dict(row))
            if run.writer is not None:
                run.writer.write(row)
                if cfg.progress:
                    print(report.epoch_line(run, loop, self.num_epochs, row, lr, elapsed,
                                            loop.epoch - self.first_epoch), flush=True)
        self.checkpoint.end_of_epoch(last=last)
        self.lifecycle.status("running")   # the epoch reached (the sweep's progress reads it)

    def close(self) -> None:
        for run in self.runs:
            run.close()
