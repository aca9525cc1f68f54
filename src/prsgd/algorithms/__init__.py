"""Algorithms by name. One line per algorithm: `name: "module:Class"` (see base.py)."""
from __future__ import annotations

import importlib

from .base import Algorithm, AlgorithmOptions, LoopState, Option, option
from .compressed import compression_label

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
    "adacomm": "adacomm:AdaComm",               # AdaComm: the interval shrinks with the loss
}


def algorithm_class(name: str) -> type[Algorithm]:
    """The class of a registered algorithm: `"module:Class"` relative to this package, or a full
    `"package.module:Class"` (an algorithm that lives elsewhere, e.g. a test's)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}")
    module, cls = REGISTRY[name].split(":")
    module = module if "." in module else f"{__name__}.{module}"
    return getattr(importlib.import_module(module), cls)


def all_options() -> list[tuple[Option, tuple[str, ...]]]:
    """Every algorithm-owned option once, with the algorithms that own it."""
    owners: dict[str, list] = {}
    for name in REGISTRY:
        for opt in algorithm_class(name).options():
            owners.setdefault(opt.name, [opt, []])[1].append(name)
    return [(opt, tuple(names)) for opt, names in owners.values()]


def label(c: dict) -> str:
    """The label of a run from its config dict (config.json's `config`); an algorithm that is
    not registered (any more) is shown by its name. A compressed run says how (`, int8/1024`)."""
    name = c.get("algorithm", "prsgd")
    return (algorithm_class(name).label(c) if name in REGISTRY else name) + compression_label(c)


def short_label(c: dict) -> str:
    name = c.get("algorithm", "prsgd")
    return (algorithm_class(name).short_label(c) if name in REGISTRY else name) + \
        compression_label(c)


def clock_shape(c: dict, workers: int) -> dict:
    """The algorithm's shape for the clock (`Algorithm.clock_shape`); an unregistered one is
    costed as Algorithm 1."""
    name = c.get("algorithm", "prsgd")
    return algorithm_class(name if name in REGISTRY else "prsgd").clock_shape(c, workers)


__all__ = ["Algorithm", "AlgorithmOptions", "LoopState", "Option", "REGISTRY",
           "algorithm_class", "all_options", "clock_shape", "label", "option", "short_label"]
