"""Algorithms by name. One line per algorithm: `name: "module:Class"` (see base.py)."""
from __future__ import annotations

import importlib

from .base import Algorithm, LoopState, Option

REGISTRY: dict[str, str] = {
    "prsgd": "periodic:PRSGD",                  # Algorithm 1
    "kavg": "periodic:KAVG",                    # K-AVG = Algorithm 1 with I = K
    "gradient_allreduce": "grad_allreduce:GradientAllreduce",
    "hier": "hier:HierAVG",
    "varying": "periodic:VaryingEpochs",        # Algorithm 2
    "one_shot": "periodic:OneShotAveraging",
    "post_local": "periodic:PostLocal",
    "hetero": "hetero:Hetero",                  # Algorithm 3
    "diloco": "diloco:DiLoCo",                  # DiLoCo: rounds through an outer optimizer
}


def algorithm_class(name: str) -> type[Algorithm]:
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def all_options() -> list[tuple[Option, tuple[str, ...]]]:
    """Every algorithm-owned option once, with the algorithms that own it."""
    owners: dict[str, list] = {}
    for name in REGISTRY:
        for opt in algorithm_class(name).options:
            owners.setdefault(opt.name, [opt, []])[1].append(name)
    return [(opt, tuple(names)) for opt, names in owners.values()]


__all__ = ["Algorithm", "LoopState", "Option", "REGISTRY", "algorithm_class", "all_options"]
