"""Hier-AVG (Zhou & Cong 2019): every K1 steps within groups of S workers, every K1*K2 steps
across all."""
from __future__ import annotations

from dataclasses import dataclass

from prsgd.core.schedule import Hierarchical, blocks
from .base import Algorithm, AlgorithmOptions, bad, option


class HierAVG(Algorithm):
    name = "hier"
    dynamic_groups = True   # a process backend creates the groups' process sets after start

    @dataclass
    class Options(AlgorithmOptions):
        group_size: int = option(0, "S: workers per group (must divide N); groups average "
                                    "every I (K1) steps")
        global_every: int = option(1, "K2: group rounds per global round (all workers average "
                                      "every K1 x K2 steps)")

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        o = cfg.algo
        if o.global_every <= 0:
            bad(cfg, "global_every", "must be a positive integer")
        if o.group_size <= 0 or workers % o.group_size:
            bad(cfg, "group_size", f"Hier-AVG needs a group size S >= 1 that divides N={workers}")

    def make_schedule(self):
        return Hierarchical(self.cfg.interval, self.opts.global_every, self.opts.group_size,
                            self.N)

    @classmethod
    def clock_shape(cls, c: dict, workers: int) -> dict:
        s = int(c.get("group_size") or 0)
        return {**super().clock_shape(c, workers),
                "local_groups": blocks(workers, s) if s else ()}

    @classmethod
    def label(cls, c: dict) -> str:
        return f"Hier-AVG S={c['group_size']} K1={c['interval']} K2={c['global_every']}"
