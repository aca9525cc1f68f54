"""Theory diagnostics (`--diagnostics`): the consensus distance before each averaging round, the
second moment G² of the stochastic gradients, and the paper's bounds they are compared with.

Yu, Yang & Zhu (AAAI 2019):
- Lemma 1: with constant step γ and averaging every I steps, E‖x̄ − x_i‖² ≤ 4γ²I²G², where
  E‖∇F(x; ζ)‖² ≤ G² (plain SGD, no momentum: with momentum β the steps are ~γ/(1−β) long and the
  bound is not the paper's).
- Corollary 1: the O(1/√(NT)) rate holds for I ≤ T^{1/4} / N^{3/4} (T local steps, N workers).

The consensus distance is C = (1/N) Σ_i ‖x_i − x̄_{G(i)}‖² over the model parameters (BN
statistics are not part of x in the theory), where G(i) is the group worker i averages with.

How it is measured without an extra communication round (Horovod backend): every worker keeps
`ref`, its parameters right after the last round that covered ALL workers (so `ref` is the same
on every worker; the initial broadcast counts). Before a round it appends d_i = ‖x_i − ref‖² as one
extra float to the averaging collective (`hvd.grouped_allreduce_`, fused into one allreduce with
the flat buffer), so the round yields mean_i d_i alongside x̄; then C = mean_i d_i − ‖x̄ − ref‖².
Subtracting ‖·‖² of drifts since the last round (not of the weights themselves) keeps the
cancellation harmless in float32. The packed backend computes C directly from its replicas.

G² is estimated as the mean over steps and workers of ‖g‖², g the flat gradient buffer after the
optimizer step (so weight decay is included: it is part of the objective's gradient), accumulated
on the device and reduced once per epoch. All of it is timed and kept off `train_seconds`.
"""
from __future__ import annotations

import math
import time

import torch

from prsgd.core.schedule import Event

DIAG_COLUMNS = ("epoch", "step", "lr", "interval", "rounds", "consensus_mean", "consensus_max",
                "consensus_last", "grad_sq", "lemma1_bound", "diag_seconds")


def corollary1(total_steps: int, workers: int, interval: int) -> dict:
    """What config.json records: T, N, the interval Corollary 1 allows, and whether I is inside."""
    i_max = total_steps ** 0.25 / workers ** 0.75
    return {"T": total_steps, "N": workers, "I": interval,
            "corollary1_max_interval": i_max, "inside_corollary1": interval <= i_max,
            "rule": "I <= T^(1/4) / N^(3/4) (Yu, Yang & Zhu 2019, Corollary 1)"}


def lemma1_bound(lr: float, interval: int, grad_sq: float) -> float:
    """Lemma 1: E‖x̄ − x_i‖² ≤ 4 γ² I² G²."""
    return 4.0 * lr * lr * interval * interval * grad_sq


def _sync(t: torch.Tensor):
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


class Diagnostics:
    """Per-run diagnostics state, wrapped around the run's communicator: it IS the run's `Comm`
    for the algorithm (a round through `average_` measures the consensus distance on the way;
    every other attribute is the wrapped communicator's). The loop calls `after_step` and, once
    per epoch, `epoch_row`."""

    def __init__(self, fm, comm, horovod: bool | None = None, num_workers: int | None = None,
                 config: int = 0):
        """`comm`: the run's communicator (or a packed process's, with `config` the run);
        `horovod`: whether workers are processes (default: from `comm`)."""
        comm = comm.view(config)
        self.fm, self.comm = fm, comm
        self.N = num_workers or comm.num_workers
        # One worker per process (Horovod, torch.distributed): the fused-collective measurement.
        self.horovod = len(comm.workers) == 1 and comm.size > 1 if horovod is None else horovod
        self.n = fm.replicas
        run = getattr(comm, "run", 0)
        self.rows = slice(run * self.N, (run + 1) * self.N) \
            if not self.horovod else slice(None)   # this run's replicas
        self.ref = fm.params.detach().clone() if self.horovod else None
        self.seconds = 0.0
        self._reset_epoch()

    def _reset_epoch(self):
        dev = self.fm.flat.device
        self.grad_sq = torch.zeros((), device=dev, dtype=torch.float64)
        self.grad_count = 0
        self.consensus: list[torch.Tensor] = []   # this process's value per round (0-dim)
        self.max_lr = 0.0

    # --- per step ------------------------------------------------------------------------------
    @torch.no_grad()
    def after_step(self, lr: float):
        t0 = time.perf_counter()
        g = self.fm.grad
        if self.horovod or self.n == self.N:
            self.grad_sq += g.double().square().sum()   # over replicas; count below is n per step
        else:   # this run's replicas only (parameter segments have the same offsets in grad)
            for o, k in self.fm.segments[:self._num_param_segments()]:
                self.grad_sq += g[o:o + k].view(self.n, -1)[self.rows].double().square().sum()
        self.grad_count += 1
        self.max_lr = max(self.max_lr, float(lr))
        _sync(g)
        self.seconds += time.perf_counter() - t0

    # --- per averaging round -------------------------------------------------------------------
    def __getattr__(self, name):   # the wrapped communicator's counters, collectives, ...
        if name == "comm":
            raise AttributeError(name)
        return getattr(self.comm, name)

    @torch.no_grad()
    def average_(self, region: torch.Tensor, event: Event, extra=None):
        if region.data_ptr() == self.fm.grad.data_ptr() or extra is not None:
            self.comm.average_(region, event, extra)   # not a model round (gradients)
        elif self.horovod:
            self._average_horovod(region, event)
        else:
            t0 = time.perf_counter()
            self.consensus.append(self.packed_consensus(event))
            _sync(region)
            self.seconds += time.perf_counter() - t0
            self.comm.average_(region, event)

    def _average_horovod(self, region: torch.Tensor, event: Event):
        t0 = time.perf_counter()
        p = self.fm.params
        drift = (p - self.ref).double().square().sum()
        extra = drift.to(p.dtype).reshape(1)
        _sync(p)
        self.seconds += time.perf_counter() - t0
        self.comm.average_(region, event, extra=extra)    # ONE collective: region and extra
        t0 = time.perf_counter()
        mean_drift = extra.double()[0]
        group = event.group_of(self.comm.rank)
        if len(group) > 1:
            c = (mean_drift - (p - self.ref).double().square().sum()).clamp_min(0.0)
        else:
            c = torch.zeros((), dtype=torch.float64, device=p.device)
        self.consensus.append(c)
        if len(group) == self.comm.size:
            self.ref.copy_(p)
        _sync(p)
        self.seconds += time.perf_counter() - t0

    def packed_consensus(self, event: Event) -> torch.Tensor:
        """(1/N) Σ_i ‖x_i − x̄_{G(i)}‖² computed directly from the replicas, in float64."""
        fm, n = self.fm, self.n
        per = self.N
        total = torch.zeros((), dtype=torch.float64, device=fm.flat.device)
        for o, k in fm.segments[:self._num_param_segments()]:
            v = fm.flat[o:o + k].view(n, -1)[self.rows].double()
            for g in event.groups:
                rows = v[g[0]:g[-1] + 1]
                total += (rows - rows.mean(0, keepdim=True)).square().sum()
        return total / per

    def _num_param_segments(self) -> int:
        return len(self.fm.momentum_segments)

    # --- per epoch -----------------------------------------------------------------------------
    def epoch_row(self, epoch: int, step: int, interval: int) -> dict:
        """Reduce this epoch's diagnostics across workers (one collective) and reset them."""
        t0 = time.perf_counter()
        c = torch.stack(self.consensus).cpu() if self.consensus else torch.zeros(0, dtype=torch.float64)
        per = 1 if self.horovod else self.N       # this process's replicas of this run
        local = torch.tensor([float(c.sum()), float(self.grad_sq), float(self.grad_count * per),
                              float(c[-1]) if len(c) else 0.0, float(c.max()) if len(c) else 0.0],
                             dtype=torch.float64)
        tot = self.comm.sum_metrics(local)
        size = self.comm.size
        rounds = len(c)
        grad_sq = float(tot[1] / tot[2]) if float(tot[2]) else math.nan
        # Each process holds its group's value per round, the same for every member of a group;
        # summing over processes and dividing by the process count gives the mean over workers.
        row = {"epoch": epoch, "step": step, "lr": self.max_lr, "interval": interval,
               "rounds": rounds,
               "consensus_mean": float(tot[0]) / size / rounds if rounds else math.nan,
               "consensus_max": float(tot[4]) / size if rounds else math.nan,
               "consensus_last": float(tot[3]) / size if rounds else math.nan,
               "grad_sq": grad_sq,
               "lemma1_bound": lemma1_bound(self.max_lr, interval, grad_sq)}
        self._reset_epoch()
        self.seconds += time.perf_counter() - t0
        row["diag_seconds"] = self.seconds
        return row
