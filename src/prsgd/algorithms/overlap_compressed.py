"""The delayed compressed round: `--overlap-delay TAU` together with `--compressor` (issue 19).

The compressed round of algorithms/compressed.py, started at a round's step t and applied TAU
local steps later with overlap.py's delay-corrected merge (LOSCAR-SGD's rule). On every worker i:

    at step t:        s_i = x_i(t) (params), b_i = its BN statistics
                      payload_i = C(s_i - x̄ (+ e_i));  e_i updated now (error feedback, at send)
                      START the compressor's collective on the payloads (casts: an asynchronous
                      low-precision allreduce; int8 / top-k: an asynchronous allgather of the
                      packed byte rows) and the exact asynchronous average of b
    at step t + TAU:  WAIT; a = x̄ + mean_j D(payload_j)  (decoded in worker order: same bits
                      on every worker, as the synchronous round)
                      x_i <- a + (x_i(t + TAU) - s_i);  stats <- avg(b) + (stats - b_i)
                      x̄ <- a

So the workers' mean after the apply is the mean of x(t + TAU) with the snapshots' mean replaced
by the compressed average of the snapshots: what the synchronous compressed round does to the
snapshots, with the steps made while the round was in flight kept on top. TAU = 0 is NOT this
class: `PRSGD` then runs the synchronous compressed round itself (the same code path, bitwise).

- The collectives are the synchronous round's, started with `Comm.average_rows_start` /
  `Comm.gather_start` and finished by their waits; the round is counted at the wait (bytes as
  the synchronous round counts them) with the seconds the wait BLOCKED (what TAU steps did not
  hide), as overlap.py counts an uncompressed delayed round.
- Only this run's replica rows are read and written (`comm.replica_rows()`): a packed sweep's
  other runs are untouched.
- At most one round is in flight (TAU < I); a round due after the last step is applied at it.
- Checkpoint: `state_dict` waits for the collectives and saves the snapshot, the decoded average
  a, the statistics' snapshot and average and the apply step; the reference and residuals stay
  in the compressed round's own state (the reference becomes a only at the apply). A resume then
  applies the same a at the same step: bit-identical to the uninterrupted run.
"""
from __future__ import annotations

import time

import torch

from prsgd.backends.base import sync
from .compressed import CompressedRound
from .overlap import DelayedRound


class DelayedCompressedRound(DelayedRound):
    """The at-most-one compressed round in flight of one run on this process. Its `start` and
    `apply_due` take the flat model `fm` where DelayedRound's take a region."""

    def __init__(self, delay: int, last_step: int, rnd: CompressedRound):
        super().__init__(delay, last_step)
        self.rnd = rnd
        self.stats = self.stats_average = None   # b_i, and their exact average (in flight)
        self.event = self.like = None            # the round's event; payload layout for decode
        self.stats_handle = None

    @torch.no_grad()
    def start(self, step: int, event, fm, comm) -> None:
        """Round at local step `step`: snapshot, encode (residuals updated), start the
        collectives."""
        if self.pending:
            raise RuntimeError(f"overlap: a round started at step {step} while the one to be "
                               f"applied at step {self.apply_at} is still pending")
        self.rnd._check(event)
        rows = comm.replica_rows()
        self.snapshot = fm.rows(fm.param_segments, rows)      # a copy: (local workers, P)
        self.stats = fm.rows(fm.stat_segments, rows)
        payloads = self.rnd.encode(self.snapshot)
        self.like, self.event, self.comm = payloads[0], event, comm
        self.handle = self.rnd.exchange_start(payloads, event, comm)
        self.stats_average = self.stats.clone()
        self.stats_handle = comm.average_rows_start(self.stats_average, event, tag="stats") \
            if self.stats.numel() else None
        self.apply_at = min(step + self.delay, self.last_step)

    @torch.no_grad()
    def finish(self) -> None:
        """Wait for the collectives, decode a = x̄ + mean_j D(payload_j); count the round with
        the seconds blocked here. Nothing if done already."""
        if self.handle is None:
            return
        comm, dtype = self.comm, self.snapshot.dtype
        if comm.timed:
            sync(self.snapshot)
        t0 = time.perf_counter()
        mean = self.rnd.exchange_finish(self.handle, self.like, comm, dtype)
        if self.stats_handle is not None:
            comm.average_rows_wait(self.stats_handle)
        if comm.timed:
            sync(self.snapshot)
        seconds = time.perf_counter() - t0
        self.average = self.rnd.reference + mean
        self.handle = self.stats_handle = None
        self.rnd._count(self.event, comm, self.like.nbytes,
                        self.stats[0].numel() * self.stats.element_size(), seconds)

    @torch.no_grad()
    def apply_due(self, step: int, fm, comm) -> bool:
        """After local step `step`: apply the pending round if due (own rows only)."""
        if not self.pending or step < self.apply_at:
            return False
        self.finish()
        rows = comm.replica_rows()
        # x <- (x - s) + a: the local progress since the snapshot, on top of the average.
        x = fm.rows(fm.param_segments, rows)
        fm.set_rows_(fm.param_segments, rows, x.sub_(self.snapshot).add_(self.average))
        if self.stats.numel():
            b = fm.rows(fm.stat_segments, rows)
            fm.set_rows_(fm.stat_segments, rows, b.sub_(self.stats).add_(self.stats_average))
        self.rnd.reference = self.average
        self.snapshot = self.average = self.stats = self.stats_average = None
        return True

    # --- state: DelayedRound's (its state_dict waits in `finish`: `average` is decoded) ----------
    STATE = (*DelayedRound.STATE, "stats", "stats_average")

    def load_state_dict(self, d: dict, like) -> None:
        """Restore a pending round (`like`: the flat model)."""
        self.stats_handle = None
        super().load_state_dict(d, like.flat)
