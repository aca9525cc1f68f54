"""A compressed averaging round (issue 19): what Algorithm 1's round becomes with `--compressor`.

Every worker keeps the reference x̄ (the last average, the same bits on every worker; the initial
broadcast model before the first round) and sends its change since it, compressed:

    delta_i = x_i - x̄ (+ e_i, the residual of error feedback)      for each worker i
    payload_i = C(delta_i);  e_i <- delta_i + e_i - D(payload_i)   (with --error-feedback)
    x_i <- x̄ + mean_j D(payload_j);  x̄ <- x_i                      on every worker, same bits

BatchNorm statistics are not compressed: they are averaged exactly in the run's precision by one
more allreduce in the same round (statistics are not deltas of an optimisation and fp16 would
round running variances). Momentum buffers are not averaged (`--average-momentum` is refused).

Which collective (the compressor's `collective`):
- casts (fp16, bf16, and none): ONE allreduce of the cast deltas, summed in the low precision
  (each addition of the reduction rounds to fp16/bf16: with N workers that is up to N-1
  roundings of the sum, on top of the cast; Horovod's Average then scales by 1/N).
- int8 and top-k: an ALLGATHER of the payloads (each worker's tensors packed into one byte row),
  then every worker decodes and averages the N payloads itself, in worker order, so every worker
  computes the same bits. We chose it over a reduce-scatter/allgather that re-quantises the
  partial sums (as PowerSGD-style or prime's int8 ring does): re-quantising adds a second error
  per hop that error feedback cannot see (the residual is a worker's own, the hop's error is
  nobody's), and top-k partial sums grow denser at each hop (k indices from each of N workers),
  so the payload stops being k. The allgather's cost is N payloads received per worker instead of
  ~2 for a ring allreduce: it wins while N x payload < 2 x the fp32 buffer, i.e. int8 (4x smaller)
  up to N ~ 8, top-k 1% (50x smaller at 8 B per kept value) up to N ~ 100. Bytes are counted as
  such (backends/base.py `Counters`).

The algorithm only delegates: `Algorithm.on_round` calls `CompressedRound.run` (Algorithm 1 and
its schedule variants; DiLoCo then takes its outer step from the compressed average and
`rebase`s the reference on the new global model); the identity compressor through this round
equals Algorithm 1 to rounding (tests/unit/test_compressed_round.py). `--compressor none` builds
no round at all: the plain average, Algorithm 1's own code.
With --overlap-delay TAU the same round is started asynchronously (`exchange_start`) and applied
TAU steps later (`exchange_finish`): algorithms/overlap_compressed.py.
"""
from __future__ import annotations

import time

import torch

from prsgd.backends.base import sync
from prsgd.compress import REGISTRY, Compressor, ErrorFeedback, Payload, make_compressor
from prsgd.core.schedule import Event


def make_round(cfg, local_workers: int) -> "CompressedRound | None":
    """The compressed round of a config (`--compressor`), or None for `none` (plain averaging)."""
    if cfg.compressor == "none":
        return None
    options = {"ratio": cfg.topk_ratio} if cfg.compressor == "topk" else {}
    return CompressedRound(make_compressor(cfg.compressor, **options), cfg.error_feedback,
                           local_workers)


def compression_label(c: dict) -> str:
    """What plots add to a run's label (config.json's `config`): '' uncompressed, else e.g.
    ', top-0.01' or ', int8/1024 no EF'."""
    name = c.get("compressor", "none")
    if name == "none" or name not in REGISTRY:
        return ""
    options = {"ratio": c.get("topk_ratio", 0.01)} if name == "topk" else {}
    comp = make_compressor(name, **options)
    return f", {comp.label()}" + ("" if c.get("error_feedback", True) else " no EF")


def pack(payload: Payload) -> torch.Tensor:
    """A payload's tensors as one row of bytes (what the allgather moves)."""
    return torch.cat([t.contiguous().view(-1).view(torch.uint8) for t in payload.tensors.values()])


def values_of(payloads: list[Payload]) -> torch.Tensor:
    """A cast's payloads as one (workers, L) matrix in their dtype (what the allreduce sums)."""
    return torch.stack([p.tensors["values"] for p in payloads])


def unpack(row: torch.Tensor, like: Payload) -> Payload:
    """The inverse of `pack`, shaped like `like` (every worker's payload has the same layout: the
    compressors' sizes depend only on the tensor's length)."""
    out, off = {}, 0
    for name, t in like.tensors.items():
        nbytes = t.numel() * t.element_size()
        out[name] = row[off:off + nbytes].clone().view(t.dtype)   # clone: aligned for view
        off += nbytes
    return Payload(out, like.numel)


class CompressedRound:
    """The round of `compressor` for this process's `local_workers` workers (one per replica row
    of `Comm.replica_rows`). State: the reference and each worker's residual."""

    def __init__(self, compressor: Compressor, error_feedback: bool, local_workers: int):
        self.compressor = compressor
        self.feedback = [ErrorFeedback(compressor) for _ in range(local_workers)] \
            if error_feedback and compressor.lossy else None
        self.reference: torch.Tensor | None = None

    def start(self, fm) -> None:
        """The initial model is the first reference (every replica holds it: take the first)."""
        self.reference = fm.rows(fm.param_segments, slice(0, 1))[0].clone()

    @torch.no_grad()
    def run(self, event: Event, fm, comm) -> None:
        """Algorithm 1's round: every worker's params become x̄ + mean_j D(payload_j)."""
        new = self.reference + self.mean_delta(event, fm, comm)
        fm.set_rows_(fm.param_segments, comm.replica_rows(), new)
        self.reference = new

    def rebase(self, fm, comm) -> None:
        """The reference becomes the model the workers now share (DiLoCo's after its outer
        step: every worker's params were set to it)."""
        self.reference = fm.rows(fm.param_segments, comm.replica_rows())[0].clone()

    @torch.no_grad()
    def mean_delta(self, event: Event, fm, comm) -> torch.Tensor:
        """mean_j D(payload_j) (the run's dtype, one replica's layout); averages the BN
        statistics exactly on the way; counts the round (bytes sent/received per collective)."""
        self._check(event)
        rows = comm.replica_rows()
        if comm.timed:
            sync(fm.flat)
        t0 = time.perf_counter()
        payloads = self.encode(fm.rows(fm.param_segments, rows))
        if self.compressor.collective == "allreduce":
            mean = self._allreduce(payloads, event, comm)
        else:
            mean = self._allgather(payloads, comm, fm.flat.dtype)
        stats = fm.rows(fm.stat_segments, rows)
        if stats.numel():
            comm.average_rows_(stats, event)     # exact: the run's own precision
            fm.set_rows_(fm.stat_segments, rows, stats)
        mean = mean.to(fm.flat.dtype)
        if comm.timed:
            sync(fm.flat)
        self._count(event, comm, payloads[0].nbytes, stats[0].numel() * stats.element_size(),
                    time.perf_counter() - t0)
        return mean

    def _check(self, event: Event) -> None:
        if len(event.groups) != 1:   # config refuses algorithms with group rounds (Hier-AVG)
            raise ValueError("a compressed round averages over all workers, not groups")

    def encode(self, params: torch.Tensor) -> list[Payload]:
        """Each local worker's payload of its delta from the reference (`params`: one row per
        local worker); error feedback updates each residual here, at send time."""
        return [self._encode(i, d) for i, d in enumerate(params - self.reference)]

    def _encode(self, i: int, delta: torch.Tensor) -> Payload:
        if self.feedback is None:
            return self.compressor.encode(delta)
        return self.feedback[i].compress(delta)[0]

    # The exchange in two halves for a delayed round (algorithms/overlap_compressed.py): the
    # same collective started asynchronously, then the same decode as the synchronous round.
    def exchange_start(self, payloads: list[Payload], event: Event, comm):
        """Start the compressor's collective on `payloads` (a handle for `exchange_finish`)."""
        if self.compressor.collective == "allreduce":
            return comm.average_rows_start(values_of(payloads), event, tag="values")
        return comm.gather_start(torch.stack([pack(p) for p in payloads]))

    def exchange_finish(self, handle, like: Payload, comm, dtype) -> torch.Tensor:
        """Wait for `exchange_start`'s collective; mean_j D(payload_j) in `dtype`."""
        if self.compressor.collective == "allreduce":
            comm.average_rows_wait(handle)
            return self._decode_values(handle.buf, like).to(dtype)
        return self._decode_table(comm.gather_wait(handle), like, dtype).to(dtype)

    def _allreduce(self, payloads: list[Payload], event: Event, comm) -> torch.Tensor:
        """Casts: the payloads add up as they are; one allreduce in their own dtype."""
        values = values_of(payloads)
        comm.average_rows_(values, event)
        return self._decode_values(values, payloads[0])

    def _decode_values(self, values: torch.Tensor, like: Payload) -> torch.Tensor:
        return self.compressor.decode(Payload({"values": values[0]}, like.numel))

    def _allgather(self, payloads: list[Payload], comm, dtype) -> torch.Tensor:
        table = comm.gather_rows(torch.stack([pack(p) for p in payloads]))
        return self._decode_table(table, payloads[0], dtype)

    def _decode_table(self, table: torch.Tensor, like: Payload, dtype) -> torch.Tensor:
        """Every worker's payload on every worker; decoded and summed in worker order (the same
        arithmetic, so the same bits, on every worker and on the packed backend)."""
        total = None
        for row in table:
            d = self.compressor.decode(unpack(row, like)).to(dtype)
            total = d if total is None else total + d
        return total / table.shape[0]

    def _count(self, event: Event, comm, payload: int, stats: int, seconds: float) -> None:
        """One round, as one worker of its group sees it: its payload and the exact statistics
        sent; the average (allreduce) or the other workers' payloads (allgather) received."""
        n = len(event.groups[0])
        if n < 2:
            comm.counters.add(event.level, 0, seconds, received=0, collectives={})
            return
        how = self.compressor.collective
        got = payload if how == "allreduce" else (n - 1) * payload
        parts = {how: payload}
        parts["allreduce"] = parts.get("allreduce", 0) + stats
        comm.counters.add(event.level, payload + stats, seconds, received=got + stats,
                          collectives=parts)

    # --- state (the checkpoint): the reference and each local worker's residual -----------------
    def state_dict(self) -> dict:
        return {"reference": self.reference.detach().cpu().clone(),
                "residuals": None if self.feedback is None
                else [f.state_dict()["residual"] for f in self.feedback]}

    def load_state_dict(self, d: dict) -> None:
        self.reference = d["reference"].to(self.reference.device, self.reference.dtype)
        if self.feedback is not None:
            for f, r in zip(self.feedback, d["residuals"]):
                f.load_state_dict({"residual": None if r is None else r.to(self.reference.device)})
