"""Hier-AVG (Zhou & Cong 2019): every K1 steps within groups of S workers, every K1*K2 steps
across all."""
from __future__ import annotations

from prsgd.core.schedule import Hierarchical
from .base import Algorithm, Option, bad


class HierAVG(Algorithm):
    name = "hier"
    dynamic_groups = True   # a process backend creates the groups' process sets after start
    options = (Option("group_size", int, 0, "Hier-AVG: S workers per group"),
               Option("global_every", int, 1, "Hier-AVG: K2 local (group) rounds per global "
                      "round"))

    @classmethod
    def validate(cls, cfg, workers: int) -> None:
        if cfg.global_every <= 0:
            bad(cfg, "global_every", "must be a positive integer")
        if cfg.group_size <= 0 or workers % cfg.group_size:
            bad(cfg, "group_size", f"Hier-AVG needs a group size S >= 1 that divides N={workers}")

    def make_schedule(self):
        return Hierarchical(self.cfg.interval, self.cfg.global_every, self.cfg.group_size, self.N)

    @classmethod
    def label(cls, c: dict) -> str:
        return f"Hier-AVG S={c['group_size']} K1={c['interval']} K2={c['global_every']}"
