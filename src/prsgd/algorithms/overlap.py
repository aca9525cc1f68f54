"""Overlapped (delayed) averaging for Algorithm 1: `--overlap-delay TAU`.

At a round's step t every worker snapshots what the round averages, s_i = x_i(t) (params + BN
statistics, + momentum with --average-momentum), starts the average of the snapshots WITHOUT
waiting (`Comm.average_start`: Horovod `allreduce_async_`, torch.distributed
`all_reduce(async_op=True)`, the packed backend's in-memory mean) and keeps stepping. TAU local
steps later it waits for the result (`Comm.average_wait`, which counts the seconds it BLOCKED,
so metrics.csv's comm seconds show what the overlap did not hide) and applies it keeping its
local progress:

    x_i <- avg_j(s_j) + (x_i(t + TAU) - s_i)

This is the delay-corrected merge of LOSCAR-SGD (Maziane, Mahran, Maranjyan & Richtarik,
arXiv:2605.20866, 2026: the worker keeps its current iterate and adds the average of the sent
models minus the model it sent, so its stale contribution is replaced by the average without
discarding the steps made while the round was in flight), here dense (every coordinate is
averaged; LOSCAR-SGD averages a random subset of coordinates per round). It is NOT
Overlap Local-SGD's rule (Wang et al., ICASSP 2020: workers are pulled towards an anchor model
that the asynchronous average produces) nor Streaming DiLoCo's mixing with alpha < 1. With this
rule the workers' mean after the apply is the mean of x(t + TAU) (nothing is lost or counted
twice), and x_i differs from that mean only by how its own last TAU steps differ from the
others' (x_i - s_i - mean_j(x_j - s_j)).

- BatchNorm statistics (and momentum, when averaged) follow the same delayed rule: they are
  part of the averaged region, as in Algorithm 1.
- A packed sweep (several runs' replicas in one buffer): a run's apply changes only its own
  rows (`Comm.own_rows`); elsewhere avg(s) = s, and (x - s) + s is not always x in floating
  point.
- TAU = 0 is Algorithm 1 itself: `PRSGD.on_round` then averages in place, the same code path
  (and `DelayedRound` with TAU = 0 would give the average bitwise: x - s is exactly 0).
- At most one round is in flight: --overlap-delay must be < I, so a round is applied before the
  next one starts. A round that would be applied after the run's last step is applied AT the
  last step (the run's final models include every round); a round started at the last step is
  applied at once, synchronously.
- With --compressor the delayed round is the compressed round, started and applied the same
  way: algorithms/overlap_compressed.py (a subclass of `DelayedRound`).
- Checkpoints: the pending round (snapshot, its average, the step it is applied at) is the
  algorithm's state. `state_dict` first WAITS for the in-flight collective (every rank saves at
  the same epoch end), so the checkpoint holds the finished average and a resume applies it at
  the same step, bit-identical to the uninterrupted run.
"""
from __future__ import annotations

import torch


class DelayedRound:
    """The at-most-one round in flight of one run on this process (see the module docstring).
    `delay`: TAU; `last_step`: the run's last local step (rounds are applied by then)."""
    # the tensors of a pending round, as the checkpoint holds them (a subclass adds its own)
    STATE = ("snapshot", "average")

    def __init__(self, delay: int, last_step: int):
        self.delay, self.last_step = delay, last_step
        self.snapshot = self.average = None   # s_i, and the buffer averaged in flight
        self.apply_at = 0                     # the local step after which it is applied
        self.handle, self.comm = None, None

    @property
    def pending(self) -> bool:
        return self.snapshot is not None

    @torch.no_grad()
    def start(self, step: int, event, region: torch.Tensor, comm) -> None:
        """Round at local step `step`: snapshot `region`, start averaging a copy of it."""
        if self.pending:   # --overlap-delay < I makes this impossible; never average twice
            raise RuntimeError(f"overlap: a round started at step {step} while the one to be "
                               f"applied at step {self.apply_at} is still pending")
        self.snapshot = region.detach().clone()
        self.average = self.snapshot.clone()
        self.comm, self.handle = comm, comm.average_start(self.average, event)
        self.apply_at = min(step + self.delay, self.last_step)

    def finish(self) -> None:
        """Wait for the in-flight average (counted by the comm); nothing if it is in already."""
        if self.handle is not None:
            self.comm.average_wait(self.handle)
            self.handle = None

    @torch.no_grad()
    def apply_due(self, step: int, region: torch.Tensor, comm) -> bool:
        """After local step `step`: apply the pending round if it is due. True if applied.
        Only this run's rows change (`comm.own_rows`: a packed sweep holds other runs too)."""
        if not self.pending or step < self.apply_at:
            return False
        self.finish()
        # x <- (x - s) + avg(s): the local progress since the snapshot, on top of the average.
        for x, s, a in zip(*(comm.own_rows(t) for t in (region, self.snapshot, self.average))):
            x.sub_(s).add_(a)
        self.snapshot = self.average = None
        return True

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The pending round, its average completed (a collective: every rank saves together)."""
        if not self.pending:
            return {"pending": False}
        self.finish()
        return {"pending": True, "apply_at": self.apply_at,
                **{k: getattr(self, k).detach().cpu().clone() for k in self.STATE}}

    def load_state_dict(self, d: dict, like: torch.Tensor) -> None:
        """Restore a pending round (`like`: a tensor of the run's device and dtype)."""
        self.handle = None
        pending = d.get("pending")
        if pending:
            self.apply_at = int(d["apply_at"])
        for k in self.STATE:
            setattr(self, k, d[k].to(like.device, like.dtype) if pending else None)
