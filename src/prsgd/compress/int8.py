"""int8 with one fp32 scale per chunk (absmax scaling, as in prime's uint8 and torchft's FP8
row-wise quantisation): about 4x fewer bytes than fp32."""
from __future__ import annotations

import torch

from .base import Compressor, Payload


class Int8(Compressor):
    """Each chunk of `chunk` values is scaled by its largest magnitude / 127 and rounded to int8.
    The error of a value is at most half its chunk's scale. Payloads with different scales cannot
    be summed as int8, so a round allgathers them (see `Compressor.collective`)."""
    name = "int8"
    collective = "allgather"

    def __init__(self, chunk: int = 1024):
        if chunk <= 0:
            raise ValueError(f"int8: chunk must be > 0 (got {chunk})")
        self.chunk = chunk

    def encode(self, x: torch.Tensor) -> Payload:
        n = x.numel()
        pad = (-n) % self.chunk
        rows = torch.nn.functional.pad(x.float().flatten(), (0, pad)).view(-1, self.chunk)
        scales = rows.abs().amax(dim=1) / 127.0
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        q = torch.round(rows / safe[:, None]).clamp_(-127, 127).to(torch.int8)
        return Payload({"q": q.flatten()[:n], "scales": scales}, n)

    def decode(self, payload: Payload) -> torch.Tensor:
        q, scales, n = payload.tensors["q"], payload.tensors["scales"], payload.numel
        pad = (-n) % self.chunk
        rows = torch.nn.functional.pad(q.float(), (0, pad)).view(-1, self.chunk)
        return (rows * scales[:, None]).flatten()[:n]

    def label(self) -> str:
        return f"int8/{self.chunk}"
