"""The classical baseline: the gradients are averaged over all workers at every step (before the
SGD update), so the models never differ; BN running statistics stay local. One allreduce of the
flat gradient buffer per step, through the backend like any other round.

`--bucket-mb MB` (> 0) is what users run instead (torch DDP, Horovod's DistributedOptimizer):
the gradient in buckets of about MB MiB whose allreduces start during backward, as their
gradients become ready, and overlap the rest of backward (grad_buckets.py). The same averages,
so the same weights (to rounding: tests/integration/test_grad_buckets.py asserts 1e-12 in fp64).
Counters: one global round per step either way, of the whole gradient's bytes (the buckets'
bytes summed), so bytes and rounds on the wire read the same for both variants; the clock gets
the bucket count from config.json (`derived.grad_buckets`) and costs the overlap."""
from __future__ import annotations

import math
from dataclasses import dataclass

from prsgd.core.schedule import GLOBAL, Event, Periodic, all_workers
from .base import Algorithm, AlgorithmOptions, bad, option
from .grad_buckets import GradBuckets


class GradientAllreduce(Algorithm):
    name = "gradient_allreduce"

    @dataclass
    class Options(AlgorithmOptions):
        bucket_mb: float = option(0.0, "0: one allreduce of the whole gradient after backward; "
                                  "> 0: DDP-style buckets of about this many MiB, each "
                                  "allreduced during backward as soon as its gradients are "
                                  "ready (overlapping communication with backward)")

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        mb = cfg.algo.bucket_mb
        if not (mb >= 0 and math.isfinite(mb)):
            bad(cfg, "bucket_mb", "must be a finite number of MiB >= 0 (0: one allreduce after "
                "backward)")
        if cfg.cuda_graph:
            bad(cfg, "cuda_graph", "not available with --algorithm gradient_allreduce: its "
                "allreduces (and --bucket-mb's, started from autograd hooks and waited for "
                "before the update) run on the host inside the step, which one captured graph "
                "cannot hold")

    def make_schedule(self):
        # The model never diverges: the schedule is the trivial I = 1 one, for counting rounds.
        return Periodic(1, self.N)

    def start(self, fm) -> None:
        self.buckets = GradBuckets(fm, self.opts.bucket_mb) if self.opts.bucket_mb > 0 else None

    def derived(self) -> dict:
        if self.buckets is None:
            return {}
        return {"grad_buckets": len(self.buckets),
                "grad_bucket_bytes": self.buckets.bucket_bytes()}

    def on_gradients(self, fm, comm) -> None:
        if self.buckets is not None:
            self.buckets.finish(comm)
        else:
            comm.average_(fm.grad, Event(GLOBAL, all_workers(self.N)))

    def on_round(self, event, fm, comm) -> None:
        pass   # the gradients were averaged before the update already

    @classmethod
    def label(cls, c: dict) -> str:
        mb = c.get("bucket_mb") or 0
        return f"gradient allreduce, {mb:g} MiB buckets" if mb else "gradient allreduce"

    @classmethod
    def clock_shape(cls, c: dict, workers: int) -> dict:
        """Buckets overlap backward (clock/model.py `overlapped_round_seconds`); their number is
        in the run's config.json (`derived.grad_buckets`)."""
        return {**super().clock_shape(c, workers), "overlap_backward": bool(c.get("bucket_mb"))}
