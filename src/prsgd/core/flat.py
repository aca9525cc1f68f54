"""The flat buffer that holds a model's state, and the two communicators that average it.

`FlatModel` moves every parameter, every BatchNorm running statistic and every momentum buffer
into ONE contiguous tensor, `flat = [params | BN stats | momentum]`, and makes the model's tensors
views into it. An averaging round is then one collective over `flat[:P+S]` (or all of `flat` when
momentum is averaged too), with no copies. Gradients likewise live in one flat tensor.

With a packed model (`replicas=n`) each tensor's n replica chunks are contiguous inside its
segment, so segment i is an (n, numel_i) matrix and averaging a group of replicas is a mean over
rows of every segment.

The communicators that move this buffer live in `prsgd.backends` (the `Comm` interface in
`backends/base.py`, one module per backend); they are re-exported here for older imports.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prsgd.core.models import averaged_tensors


class FlatModel:
    def __init__(self, model: nn.Module, replicas: int = 1):
        self.model, self.replicas = model, replicas
        named = averaged_tensors(model)
        params = [t for k, t in named if isinstance(t, nn.Parameter)]
        stats = [t for k, t in named if not isinstance(t, nn.Parameter)]
        self.names = [k for k, _ in named]
        self.num_params = sum(p.numel() for p in params)
        self.num_stats = sum(s.numel() for s in stats)
        ref = params[0]
        P, S = self.num_params, self.num_stats
        self.flat = torch.zeros(2 * P + S, device=ref.device, dtype=ref.dtype)
        self.grad = torch.zeros(P, device=ref.device, dtype=ref.dtype)
        self.segments: list[tuple[int, int]] = []   # (offset, numel) of params and stats
        off = 0
        for t in params + stats:
            n = t.numel()
            self.flat[off:off + n].copy_(t.detach().reshape(-1))
            t.data = self.flat[off:off + n].view_as(t)
            self.segments.append((off, n))
            off += n
        off = 0
        for p in params:
            p.grad = self.grad[off:off + p.numel()].view_as(p)
            off += p.numel()
        # Momentum segments mirror the parameter segments, shifted by P + S.
        self.momentum_segments = [(o + P + S, n) for o, n in self.segments[:len(params)]]

    @property
    def params(self) -> torch.Tensor:
        return self.flat[: self.num_params]

    @property
    def state(self) -> torch.Tensor:
        """Parameters and BN statistics: what every averaging round covers."""
        return self.flat[: self.num_params + self.num_stats]

    @property
    def momentum(self) -> torch.Tensor:
        return self.flat[self.num_params + self.num_stats:]

    def region(self, with_momentum: bool) -> torch.Tensor:
        return self.flat if with_momentum else self.state

    def region_segments(self, with_momentum: bool) -> list[tuple[int, int]]:
        return self.segments + (self.momentum_segments if with_momentum else [])

    @property
    def param_segments(self) -> list[tuple[int, int]]:
        return self.segments[:len(self.momentum_segments)]

    @property
    def stat_segments(self) -> list[tuple[int, int]]:
        return self.segments[len(self.momentum_segments):]

    def rows(self, segments: list[tuple[int, int]], rows: slice) -> torch.Tensor:
        """Replicas `rows` of the tensors `segments` as an (r, L) matrix, each row laid out as for
        replicas=1 (a copy: a packed replica's tensors are not contiguous)."""
        n = self.replicas
        if not segments:
            return self.flat.new_zeros(len(range(n)[rows]), 0)
        return torch.cat([self.flat[o:o + k].view(n, -1)[rows] for o, k in segments], 1)

    @torch.no_grad()
    def set_rows_(self, segments: list[tuple[int, int]], rows: slice,
                  values: torch.Tensor) -> None:
        """Write `values` ((r, L) as `rows` gives, or one (L,) row for all r) into replicas
        `rows` of the tensors `segments`."""
        n, off = self.replicas, 0
        for o, k in segments:
            w = k // n
            self.flat[o:o + k].view(n, -1)[rows].copy_(values[..., off:off + w])
            off += w

    def replica_mean(self, rows: slice | None = None) -> torch.Tensor:
        """Mean over replicas (all, or `rows`) of params + stats, laid out as for replicas=1."""
        n = self.replicas
        parts = [self.flat[o:o + k].view(n, -1)[rows or slice(None)].mean(0)
                 for o, k in self.segments]
        return torch.cat(parts)

    def zero_grad(self):
        self.grad.zero_()

    @torch.no_grad()
    def sgd_step(self, lr: torch.Tensor | float, momentum: float, weight_decay: float):
        """torch.optim.SGD (dampening 0, no Nesterov) on the flat buffers, replicas elementwise."""
        g, p = self.grad, self.params
        if weight_decay:
            g.add_(p, alpha=weight_decay)
        if momentum:
            self.momentum.mul_(momentum).add_(g)
            g = self.momentum
        if isinstance(lr, torch.Tensor):
            p.sub_(g * lr)
        else:
            p.add_(g, alpha=-lr)


    # the checkpoint's protocol: every worker's whole buffer (local models differ between rounds)
    def state_dict(self) -> torch.Tensor:
        return self.flat.detach().cpu().clone()

    def load_state_dict(self, flat: torch.Tensor) -> None:
        if flat.shape != self.flat.shape:
            raise ValueError(f"flat buffer of {flat.numel()} values, not {self.flat.numel()}")
        with torch.no_grad():
            self.flat.copy_(flat.to(self.flat.device))

    def set_replica_(self, r: int, state: torch.Tensor) -> None:
        """Write a one-replica params + stats layout `state` into replica `r`."""
        off = 0
        with torch.no_grad():
            for o, k in self.segments:
                n = k // self.replicas
                self.flat[o:o + k].view(self.replicas, -1)[r].copy_(state[off:off + n])
                off += n

