"""Casts: the identity, fp16 and bf16. A cast's payloads add up as they are (an allreduce)."""
from __future__ import annotations

import torch

from .base import Compressor, Payload


class Identity(Compressor):
    """No compression: the payload is the tensor itself (a compressed round with it is the
    uncompressed round)."""
    name = "none"
    collective = "allreduce"
    lossy = False

    def encode(self, x: torch.Tensor) -> Payload:
        return Payload({"values": x}, x.numel())

    def decode(self, payload: Payload) -> torch.Tensor:
        return payload.tensors["values"]


class _Cast(Compressor):
    collective = "allreduce"
    dtype: torch.dtype

    def encode(self, x: torch.Tensor) -> Payload:
        return Payload({"values": x.to(self.dtype)}, x.numel())

    def decode(self, payload: Payload) -> torch.Tensor:
        return payload.tensors["values"].float()


class FP16(_Cast):
    """IEEE half precision (Horovod's `Compression.fp16`): 2x fewer bytes; values beyond 65504
    overflow, so it suits deltas (small), not models."""
    name = "fp16"
    dtype = torch.float16


class BF16(_Cast):
    """bfloat16: fp32's range with 8 bits of mantissa: 2x fewer bytes, coarser than fp16."""
    name = "bf16"
    dtype = torch.bfloat16
