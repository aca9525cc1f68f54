"""The batches of this process's workers: a pure function of (seed, data epoch, worker).

Local step t (1-based) of a worker uses column (t-1) % spe of the plan of data epoch
(t-1) // spe. Workers that make more steps (Algorithm 3) just move through their shards of later
data epochs sooner. A packed sweep's runs all see the same batches (the same seed): the batch is
gathered once and repeated for every run.
"""
from __future__ import annotations

import torch

from prsgd.data import plan as data_mod_plan


class Feed:
    def __init__(self, images, *, num_samples: int, workers: list[int], num_workers: int,
                 batch_size: int, seed: int, augment: bool, steps_per_epoch: int, runs: int,
                 device: torch.device):
        self.images, self.M, self.workers, self.N = images, num_samples, workers, num_workers
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.spe, self.runs, self.device = steps_per_epoch, runs, device
        self._plans: dict[int, data_mod_plan.EpochPlan] = {}
        self.batch_index = None   # which samples each worker used last (for tests)

    def plan(self, data_epoch: int) -> data_mod_plan.EpochPlan:
        if data_epoch not in self._plans:
            self._plans[data_epoch] = data_mod_plan.epoch_plan(
                self.M, self.workers, self.N, self.batch_size, self.seed, data_epoch,
                self.augment).to(self.device)
        return self._plans[data_epoch]

    def _forget_before(self, data_epoch: int) -> None:
        self._plans = {e: p for e, p in self._plans.items() if e >= data_epoch}

    def batch(self, step: int):
        """Every local worker's batch of its local step `step` (the same step for all)."""
        data_epoch, col = divmod(step - 1, self.spe)
        self._forget_before(data_epoch)
        p = self.plan(data_epoch)
        self.batch_index = p.index[:, col]
        x, y = self.images.batch(p.index[:, col], p.oy[:, col], p.ox[:, col], p.flip[:, col])
        if self.runs > 1:
            x = x.repeat(1, self.runs, 1, 1) if x.dim() == 4 else x.repeat(1, self.runs)
            y = y.repeat(1, self.runs)
        return x, y

    def batch_per_worker(self, steps: list[int]):
        """Each worker's batch of its own local step `steps[w]` (workers at their own pace; a
        worker at step 0 gets its first batch, which an idle worker's masked step discards)."""
        where = [divmod(max(k, 1) - 1, self.spe) for k in steps]
        self._forget_before(min(e for e, _ in where))
        parts = [torch.stack([getattr(self.plan(e), f)[w, col] for w, (e, col)
                              in enumerate(where)]) for f in ("index", "oy", "ox", "flip")]
        self.batch_index = parts[0]
        return self.images.batch(*parts)
