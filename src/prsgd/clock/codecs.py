"""The CPU time a compressed round spends encoding and decoding, measured and modelled.

A compressed round (algorithms/compressed.py) does work besides its collective: each worker
encodes its delta (with error feedback: encode, decode what was sent, keep the residual) and
packs the payload; after an allgather it unpacks and decodes every worker's payload and sums
them, after a cast's allreduce it decodes the one sum. On a CPU rank that work competes with
nothing but the collective, and the run's `comm_seconds` counts it (the round's timer starts
before encoding): top-k's selection over 270k values costs more than its 1 % payload takes on a
50 Mbit/s link.

Measured (`calibrate-compute --codecs fp16,int8,topk:0.01`): the round's own methods
(`CompressedRound.encode`, `pack`, `_decode_table` / `_decode_values`) on random deltas of the
run's parameter count, every rank at once (the contention training sees), no collective; per
compressor the mean seconds to encode one payload and to decode one payload, the slowest rank.

Modelled, per round (`round_seconds`): encode + d x decode, d = the number of payloads a worker
decodes (every worker's after an allgather, one after an allreduce), scaled linearly from the
calibration's parameter count to the run's (an approximation: top-k's selection is not exactly
linear). A calibration without a `codecs` part (made before this existed) costs no codec time.
"""
from __future__ import annotations

import time

from prsgd.clock.checks import CalibrationError, number

ALLGATHER = "allgather"


def parse_specs(text: str) -> list:
    """'fp16,int8,topk:0.01' -> built compressors (ValueError naming the bad one)."""
    from prsgd.compress import make_compressor
    out = []
    for spec in filter(None, (s.strip() for s in text.split(","))):
        name, _, option = spec.partition(":")
        try:
            if name == "topk":
                out.append(make_compressor(name, ratio=float(option) if option else 0.01))
            elif option:
                raise ValueError(f"{name} takes no option (got {spec!r}; only topk:RATIO does)")
            else:
                out.append(make_compressor(name))
        except ValueError as e:
            raise ValueError(f"--codecs {spec!r}: {e}") from None
    return out


def time_codec(compressor, numel: int, workers: int, repeats: int = 10, warmup: int = 2,
               error_feedback: bool = True, seed: int = 0) -> dict:
    """Mean seconds to encode one payload (with error feedback when the compressor is lossy and
    `error_feedback`) and to decode one, through the compressed round's own code."""
    import torch
    from prsgd.algorithms.compressed import CompressedRound, pack, values_of
    rnd = CompressedRound(compressor, error_feedback, local_workers=1)
    rnd.reference = torch.zeros(numel)
    gen = torch.Generator().manual_seed(seed)
    enc, dec = [], []
    for k in range(warmup + repeats):
        params = torch.randn(1, numel, generator=gen) * 1e-2
        t0 = time.perf_counter()
        payloads = rnd.encode(params)
        if compressor.collective == ALLGATHER:
            table = torch.stack([pack(p) for p in payloads])
        else:
            values = values_of(payloads)
        t1 = time.perf_counter()
        if compressor.collective == ALLGATHER:
            rnd._decode_table(table.repeat(workers, 1), payloads[0], torch.float32)
        else:
            rnd._decode_values(values, payloads[0])
        t2 = time.perf_counter()
        if k >= warmup:
            enc.append(t1 - t0)
            dec.append((t2 - t1) / decoded_payloads(compressor.collective, workers))
    return {"encode_s": sum(enc) / len(enc), "decode_s": sum(dec) / len(dec)}


def decoded_payloads(collective: str, workers: int) -> int:
    """Payloads one worker decodes per round: all of them after an allgather, the sum once."""
    return workers if collective == ALLGATHER else 1


def measure(compressors, numel: int, comm, repeats: int, warmup: int) -> dict:
    """The `codecs` part of a compute calibration: every rank times every compressor at once;
    per compressor the slowest rank's encode and decode."""
    workers = comm.size if comm else 1
    out = {"numel": numel, "workers": workers, "error_feedback": True, "repeats": repeats,
           "statistic": "mean over repeats; the slowest rank", "per_compressor": {}}
    for c in compressors:
        if comm is not None:
            comm.barrier()
        mine = time_codec(c, numel, workers, repeats, warmup)
        every = comm.allgather_object(mine) if comm else [mine]
        out["per_compressor"][c.label()] = {
            "collective": c.collective,
            "encode_s": max(r["encode_s"] for r in every),
            "decode_s": max(r["decode_s"] for r in every),
            "per_rank": every}
    return out


def check(part, where: str) -> None:
    """A calibration's `compute.codecs`: numel >= 1, seconds >= 0 per compressor."""
    if not isinstance(part, dict):
        raise CalibrationError(f"{where} must be a JSON object")
    number(part.get("numel"), f"{where}.numel", ">= 1", integer=True)
    for label, d in (part.get("per_compressor") or {}).items():
        if not isinstance(d, dict):
            raise CalibrationError(f"{where}.per_compressor.{label} must be a JSON object")
        for key in ("encode_s", "decode_s"):
            number(d.get(key), f"{where}.per_compressor.{label}.{key}", ">= 0")


def round_seconds(part: dict | None, label: str, collective: str, numel: int, workers: int,
                  source: str = "calibration") -> float:
    """Modelled codec seconds of one round of `workers` workers for a compressor (its `label`)
    on `numel` parameters; 0 when the calibration has no codecs part."""
    if not part:
        return 0.0
    d = (part.get("per_compressor") or {}).get(label)
    if d is None:
        known = ", ".join(part.get("per_compressor") or {}) or "none"
        raise CalibrationError(f"{source}: no codec timing for {label!r} (measured: {known}); "
                               f"calibrate-compute --codecs with it")
    scale = numel / part["numel"]
    return scale * (d["encode_s"] + decoded_payloads(collective, workers) * d["decode_s"])
