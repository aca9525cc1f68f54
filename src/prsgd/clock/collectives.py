"""The cost of one ring collective over one link (alpha, bus bandwidth B), for n workers
(Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication Operations in MPICH",
IJHPCA 2005, the ring algorithms; NCCL's nccl-tests doc/PERFORMANCE.md defines the bus bandwidth
so that B is the same number for all three):

    ring allreduce of S bytes:             2(n-1)·alpha + 2(n-1)/n · S / B
    ring reduce-scatter of S bytes:         (n-1)·alpha +  (n-1)/n · S / B
    ring allgather of p bytes per worker:   (n-1)·alpha +   (n-1) · p / B

(an allreduce is a reduce-scatter followed by an allgather of the S/n-byte pieces.) `alpha` is
the latency of one ring step. Horovod's Gloo and NCCL collectives are rings (gloo's `allreduce`
defaults to its ring algorithm). What a round is made of, and the per-collective overhead, are
the model's (clock/model.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from prsgd.clock.checks import CalibrationError

ALLREDUCE, ALLGATHER, REDUCE_SCATTER = "allreduce", "allgather", "reduce_scatter"


@dataclass(frozen=True)
class Link:
    alpha_s: float           # latency of one ring step
    bandwidth_Bps: float     # bus bandwidth, bytes per second
    # (collective, alpha_s, bandwidth_Bps): a collective measured and fitted on its own
    # (calibrate-network --allgather); the others use the link's own (allreduce) fit.
    fitted: tuple = ()

    def ring_seconds(self, n: int, nbytes: float) -> float:
        return ring_allreduce_seconds(n, nbytes, self.alpha_s, self.bandwidth_Bps)

    def seconds(self, collective: str, n: int, nbytes: float) -> float:
        """One ring `collective` of n workers (`nbytes`: see COLLECTIVES) over this link."""
        if collective not in COLLECTIVES:
            raise CalibrationError(f"no cost model for the collective {collective!r} (known: "
                                   f"{', '.join(COLLECTIVES)})")
        alpha, bw = next(((a, b) for c, a, b in self.fitted if c == collective),
                         (self.alpha_s, self.bandwidth_Bps))
        return COLLECTIVES[collective](n, nbytes, alpha, bw)


def ring_allreduce_seconds(n: int, nbytes: float, alpha_s: float, bandwidth_Bps: float) -> float:
    """2(n-1) steps of alpha, each moving nbytes/n over every link: 2(n-1)/n · nbytes / B."""
    if n < 2:
        return 0.0
    return 2 * (n - 1) * alpha_s + 2 * (n - 1) / n * nbytes / bandwidth_Bps


def ring_reduce_scatter_seconds(n: int, nbytes: float, alpha_s: float,
                                bandwidth_Bps: float) -> float:
    """The first half of a ring allreduce: n-1 steps, each moving nbytes/n: (n-1)/n · S / B."""
    if n < 2:
        return 0.0
    return (n - 1) * alpha_s + (n - 1) / n * nbytes / bandwidth_Bps


def ring_allgather_seconds(n: int, per_worker_bytes: float, alpha_s: float,
                           bandwidth_Bps: float) -> float:
    """n-1 steps, each passing one worker's whole payload on: every worker receives the n-1
    others' `per_worker_bytes`, (n-1) · p / B (the allreduce's second half with p = S/n)."""
    if n < 2:
        return 0.0
    return (n - 1) * alpha_s + (n - 1) * per_worker_bytes / bandwidth_Bps


# name -> cost(n, bytes, alpha, B); bytes: the whole buffer for allreduce and reduce-scatter,
# one worker's payload for allgather (the names of `prsgd.compress`'s `Compressor.collective`).
COLLECTIVES = {ALLREDUCE: ring_allreduce_seconds, REDUCE_SCATTER: ring_reduce_scatter_seconds,
               ALLGATHER: ring_allgather_seconds}
