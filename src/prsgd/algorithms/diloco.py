"""DiLoCo (Douillard et al. 2023, arXiv:2311.08105): local SGD whose rounds go through an outer
optimizer. Every worker keeps a copy x of the last global model. Every I steps the workers'
models are averaged (one collective, as in Algorithm 1: a = mean_i x_i), the pseudo-gradient
Δ = x − a goes through SGD with Nesterov momentum (outer lr 0.7, momentum 0.9 by default), and
the result is the new global model on every worker and the new copy:

    b ← μ b + Δ;   x ← x − η (Δ + μ b)   (Nesterov; without it x ← x − η b)

Only the parameters take the outer step: BN statistics (and the momentum buffers with
--average-momentum) are averaged by the same collective as in Algorithm 1. torchft's `DiLoCo`
averages Δ_i = x − x_i instead of x_i; the mean is the same, the rounding differs. With η = 1 and
μ = 0 the new model is x − (x − a), which equals Algorithm 1's a up to rounding (not bitwise;
tests/test_diloco.py: 1e-12 in fp64). The copy and the outer momentum are this algorithm's state,
saved in every checkpoint.

With --compressor the average a is the compressed round's (algorithms/compressed.py): each worker
sends its compressed x_i − x (minus its pseudo-gradient, with error feedback), and the round's
reference is reset to the new global model after the outer step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prsgd.core.schedule import GLOBAL, Periodic
from .base import Algorithm, AlgorithmOptions, bad, option


class DiLoCo(Algorithm):
    name = "diloco"
    compressible = True   # --compressor: the average a is made by the compressed round

    @dataclass
    class Options(AlgorithmOptions):
        outer_lr: float = option(0.7, "the outer optimizer's learning rate", lr=True)
        outer_momentum: float = option(0.9, "the outer optimizer's momentum, in [0, 1)")
        outer_nesterov: bool = option(True, "Nesterov momentum in the outer optimizer")

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        if not 0 <= cfg.algo.outer_momentum < 1:
            bad(cfg, "outer_momentum", "must be in [0, 1)")

    def make_schedule(self):
        return Periodic(self.cfg.interval, self.N)

    def start(self, fm) -> None:
        super().start(fm)            # the compressed round's reference, with --compressor
        self.fm = fm
        self.copy = fm.params.detach().clone()          # x: the last global model
        self.buf = torch.zeros_like(self.copy) if self.opts.outer_momentum else None

    @torch.no_grad()
    def on_round(self, event, fm, comm) -> None:
        if self.compressed is not None:   # a = x + mean_i D(C(x_i - x + e_i)): the workers'
            self.compressed.run(event, fm, comm)   # pseudo-gradients, compressed
        else:
            comm.average_(fm.region(self.cfg.average_momentum), event)   # params now hold a
        if event.level != GLOBAL:
            return
        p, mu = fm.params, self.opts.outer_momentum
        delta = self.copy - p                           # the pseudo-gradient x − a
        if self.buf is not None:
            self.buf.mul_(mu).add_(delta)
            step = delta.add(self.buf, alpha=mu) if self.opts.outer_nesterov else self.buf
        else:
            step = delta
        self.copy.add_(step, alpha=-self.opts.outer_lr)
        p.copy_(self.copy)
        if self.compressed is not None:   # the next deltas are taken from the new global model
            self.compressed.rebase(fm, comm)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "copy": self.copy.detach().cpu().clone(),
                "outer_momentum": None if self.buf is None else self.buf.detach().cpu().clone()}

    def load_state_dict(self, d: dict) -> None:
        super().load_state_dict(d)
        self.copy.copy_(d["copy"].to(self.copy.device))
        if self.buf is not None:
            self.buf.copy_(d["outer_momentum"].to(self.buf.device))

    @classmethod
    def label(cls, c: dict) -> str:
        return (f"DiLoCo I={c['interval']} outer lr={c['outer_lr']:g} "
                f"m={c['outer_momentum']:g}{'' if c.get('outer_nesterov', True) else ' (no Nesterov)'}")
