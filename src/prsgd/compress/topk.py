"""Top-k sparsification: the k = ceil(ratio * n) largest-magnitude values and their indices."""
from __future__ import annotations

import math

import torch

from .base import Compressor, Payload


class TopK(Compressor):
    """Keeps the `ratio` fraction of values of largest magnitude (fp32 values + int32 indices:
    8 bytes each). Biased: without error feedback the coordinates it drops can stay dropped for
    ever (tests/unit/test_compress.py shows a run that stalls without it). Workers pick different
    indices, so a round allgathers payloads."""
    name = "topk"
    collective = "allgather"

    def __init__(self, ratio: float = 0.01):
        if not (isinstance(ratio, (int, float)) and 0 < ratio <= 1 and math.isfinite(ratio)):
            raise ValueError(f"topk: ratio must be in (0, 1] (got {ratio!r})")
        self.ratio = float(ratio)

    def k(self, n: int) -> int:
        return max(1, math.ceil(self.ratio * n))

    def encode(self, x: torch.Tensor) -> Payload:
        flat = x.flatten()
        idx = torch.topk(flat.abs(), self.k(flat.numel()), sorted=False).indices
        idx = idx.sort().values        # a canonical order: equal inputs give equal payloads
        return Payload({"values": flat[idx].float(), "indices": idx.to(torch.int32)}, flat.numel())

    def decode(self, payload: Payload) -> torch.Tensor:
        values = payload.tensors["values"]
        out = torch.zeros(payload.numel, dtype=torch.float32, device=values.device)
        out[payload.tensors["indices"].long()] = values
        return out

    def label(self) -> str:
        return f"top-{self.ratio:g}"
