"""Compressors for what an averaging round exchanges (issue 19): one file each, one registry.

A round of compressed averaging sends `C(delta + residual)` instead of the model: `delta` is what
changed since the last average (PR-SGD: x_i - x̄; DiLoCo: the pseudo-gradient). `ErrorFeedback`
keeps, per worker, the part that was not sent and adds it to the next round's delta (Seide et
al. 2014; Karimireddy et al. 2019; Basu et al. 2019 for local SGD).

Adding a compressor: a `Compressor` subclass in its own module and one line in `REGISTRY`.
"""
from __future__ import annotations

from .base import Compressor, ErrorFeedback, Payload
from .casts import BF16, FP16, Identity
from .int8 import Int8
from .topk import TopK

REGISTRY: dict[str, type[Compressor]] = {c.name: c for c in (Identity, FP16, BF16, Int8, TopK)}


def make_compressor(name: str, **options) -> Compressor:
    """The registered compressor `name`, built with its options (e.g. `ratio` for top-k)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown compressor {name!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[name](**options)


__all__ = ["Compressor", "ErrorFeedback", "Payload", "REGISTRY", "make_compressor"]
