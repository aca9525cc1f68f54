"""The compressor interface, the payload it produces, and error feedback around any compressor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch


@dataclass
class Payload:
    """What one worker sends for one tensor: named tensors (values, scales, indices...) and the
    length of the tensor they encode. `nbytes` is what goes on the wire."""
    tensors: dict[str, torch.Tensor]
    numel: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class Compressor:
    """Encodes a 1-d float tensor into a `Payload` and decodes it back (lossy or not).

    `collective` says how a round exchanges payloads: "allreduce" when payloads can be summed as
    they are (a cast: the sum of fp16 tensors is an fp16 tensor), "allgather" when they cannot
    (int8 with per-chunk scales, top-k values at different indices): every worker then receives
    every payload and decodes and averages them itself, in worker order, so all agree bitwise.
    """
    name: ClassVar[str] = ""
    collective: ClassVar[str] = "allgather"
    lossy: ClassVar[bool] = True

    def encode(self, x: torch.Tensor) -> Payload:
        raise NotImplementedError

    def decode(self, payload: Payload) -> torch.Tensor:
        raise NotImplementedError

    def payload_bytes(self, numel: int) -> int:
        """Bytes of the payload of a tensor of `numel` elements (for the clock, before any run)."""
        return self.encode(torch.zeros(numel)).nbytes

    def label(self) -> str:
        return self.name

    def roundtrip(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class ErrorFeedback:
    """Per-worker memory of what compression dropped: send C(delta + e), keep e = delta + e - D(C).

    With it, every part of every delta is sent eventually; without it a biased compressor (top-k)
    can drop the same coordinates forever. State for the checkpoint: the residual."""

    def __init__(self, compressor: Compressor):
        self.compressor = compressor
        self.residual: torch.Tensor | None = None

    def compress(self, delta: torch.Tensor) -> tuple[Payload, torch.Tensor]:
        """The payload to send and what it decodes to (the part of delta + e that was sent)."""
        if self.residual is None:
            self.residual = torch.zeros_like(delta)
        corrected = delta + self.residual
        payload = self.compressor.encode(corrected)
        sent = self.compressor.decode(payload).to(delta.dtype)
        self.residual = corrected - sent
        return payload, sent

    def state_dict(self) -> dict:
        return {"residual": None if self.residual is None else self.residual.detach().cpu().clone()}

    def load_state_dict(self, d: dict) -> None:
        self.residual = None if d["residual"] is None else d["residual"].clone()
