"""The classical baseline: the gradients are averaged over all workers at every step (before the
SGD update), so the models never differ; BN running statistics stay local. One allreduce of the
flat gradient buffer per step, through the backend like any other round."""
from __future__ import annotations

from prsgd.core.schedule import GLOBAL, Event, Periodic, all_workers
from .base import Algorithm, bad


class GradientAllreduce(Algorithm):
    name = "gradient_allreduce"

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        from prsgd.backends import backend_class
        if backend_class(cfg.backend).holds_all_workers:
            bad(cfg, "backend", "gradient_allreduce runs only on a backend with one worker per "
                "process (horovod)")
        if cfg.cuda_graph:
            bad(cfg, "cuda_graph", "not available with --algorithm gradient_allreduce")

    def make_schedule(self):
        # The model never diverges: the schedule is the trivial I = 1 one, for counting rounds.
        return Periodic(1, self.N)

    def on_gradients(self, fm, comm) -> None:
        comm.average_(fm.grad, Event(GLOBAL, all_workers(self.N)))

    def on_round(self, event, fm, comm) -> None:
        pass   # the gradients were averaged before the update already

    @classmethod
    def label(cls, c: dict) -> str:
        return "gradient allreduce"
