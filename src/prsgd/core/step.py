"""The local SGD step of every replica on this process, eager or captured in one CUDA graph.

A step is: gather + augment the batch on the device (from the epoch plan), forward, per-replica
cross-entropy, backward, SGD on the flat buffers, and accumulation of the epoch's loss/accuracy
sums on the device. The same Python function runs eagerly (CPU, or GPU without `--cuda-graph`)
or once under capture (`--cuda-graph`); a replay then costs one launch instead of ~300.

What keeps a capture valid across the whole run:
- the epoch plan is copied into static device buffers at the start of each epoch, and the step
  reads its column through a device-side position counter that the graph itself advances, so a
  replay needs no host input at all;
- the learning rate is a device scalar filled only when the schedule changes it;
- gradients, momentum and weights are the `FlatModel`'s persistent buffers;
- capture needs eager warm-up iterations (cuDNN/cuBLAS workspaces); their effect on the model is
  undone by restoring the flat buffer, so the run's mathematics is exactly the eager one.

`GraphCache` captures any other small static piece (an averaging round of one packed run) the
first time it is asked for and replays it afterwards.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.float32, "fp64": torch.float64}


class StepRunner:
    def __init__(self, model, fm, data, *, replicas: int, copies: int = 1, precision: str = "fp32",
                 momentum: float = 0.9, weight_decay: float = 0.0, channels_last: bool = False,
                 cuda_graph: bool = False, device: torch.device = torch.device("cpu")):
        """`copies`: the model holds `copies` runs of `replicas // copies` workers each; every run
        sees the same batches (the same seed), so the batch is gathered once and repeated."""
        self.model, self.fm, self.data = model, fm, data
        self.R, self.copies = replicas, copies
        self.dtype = DTYPES[precision]
        self.bf16 = precision == "bf16"
        self.momentum, self.weight_decay = momentum, weight_decay
        self.channels_last = channels_last
        self.device = device
        self.cuda_graph = cuda_graph and device.type == "cuda"
        self.lr_t = torch.zeros((), device=device, dtype=fm.flat.dtype)
        self._lr = None
        self.loss_sum = torch.zeros(replicas, device=device, dtype=torch.float64)
        self.correct = torch.zeros(replicas, device=device, dtype=torch.int64)
        self.plan = None        # eager: the epoch plan; graph: static copies of it
        self.pos = torch.zeros(1, device=device, dtype=torch.long)
        self.graph = None
        # Optional () -> None between backward and the SGD update (gradient allreduce's round).
        self.grad_hook: Callable[[], None] | None = None

    # --- per epoch / per step ------------------------------------------------------------------
    def set_lr(self, lr: float):
        if lr != self._lr:
            self.lr_t.fill_(lr)
            self._lr = lr

    def begin_epoch(self, plan):
        self.loss_sum.zero_()
        self.correct.zero_()
        self.pos.zero_()
        if not self.cuda_graph:
            self.plan = plan
            return
        if self.plan is None:
            self.plan = [t.clone() for t in (plan.index, plan.oy, plan.ox, plan.flip)]
        else:
            for dst, src in zip(self.plan, (plan.index, plan.oy, plan.ox, plan.flip)):
                dst.copy_(src, non_blocking=True)
        if self.graph is None:
            self._capture()

    def step(self, s: int):
        """Local step number `s` (0-based) of the epoch for every replica."""
        if self.graph is not None:
            self.graph.replay()
        else:
            p = self.plan
            self._compute(p.index[:, s], p.oy[:, s], p.ox[:, s], p.flip[:, s])

    # --- the arithmetic ------------------------------------------------------------------------
    def _compute(self, index, oy, ox, flip):
        x, y = self.data.batch(index, oy, ox, flip)              # (B, 3N, 32, 32), (B, N)
        if self.copies > 1:
            x, y = x.repeat(1, self.copies, 1, 1), y.repeat(1, self.copies)
        per, correct = self.update(x.to(self.dtype), y)
        self.loss_sum += per.double()
        self.correct += correct

    def update(self, x, y, step: bool = True):
        """Forward, per-replica loss, backward and (`step`) SGD with the device lr, on a batch
        already gathered; returns (each replica's loss, each replica's number correct). The
        eager trainer calls this too, so eager and captured steps are the same arithmetic."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self.model.train()
        self.fm.zero_grad()
        # cache_enabled=False: autocast's weight cache must not outlive a graph capture.
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16,
                            cache_enabled=False):
            out = self.model(x)                                      # (B, R, 10)
        per = F.cross_entropy(out.to(self.dtype).reshape(-1, out.shape[-1]), y.reshape(-1),
                              reduction="none").view(-1, self.R).mean(0)   # each replica's loss
        per.sum().backward()
        if self.grad_hook is not None:
            self.grad_hook()
        if step:
            self.fm.sgd_step(self.lr_t, self.momentum, self.weight_decay)
        return per.detach(), (out.detach().argmax(-1) == y).sum(0)

    def masked_update(self, x, y, active: list[bool]):
        """`update` for the active replicas only: idle replicas' parameters, BN statistics and
        momentum are put back afterwards (their forward/backward is wasted, not wrong)."""
        idle = [w for w, a in enumerate(active) if not a]
        if not idle:
            return self.update(x, y)
        rows = torch.tensor(idle, device=self.device)
        views = [self.fm.flat[o:o + k].view(self.R, -1) for o, k in self.fm.region_segments(True)]
        saved = [v[rows] for v in views]          # advanced indexing: copies
        out = self.update(x, y)
        with torch.no_grad():
            for v, kept in zip(views, saved):
                v[rows] = kept
        return out

    def _graph_body(self):
        col = [t.index_select(1, self.pos).squeeze(1) for t in self.plan]
        self._compute(*col)
        self.pos += 1

    def _capture(self, warmup: int = 3):
        fm = self.fm
        saved = fm.flat.clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self._graph_body()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._graph_body()
        # Capture runs nothing, warm-up did: restore the weights and the epoch's counters.
        fm.flat.copy_(saved)
        fm.zero_grad()
        self.loss_sum.zero_()
        self.correct.zero_()
        self.pos.zero_()


class GraphCache:
    """Captures `fn` once per key on CUDA and replays it afterwards; runs it eagerly elsewhere."""

    def __init__(self, device: torch.device):
        self.enabled = device.type == "cuda"
        self.device = device
        self.graphs: dict = {}

    def run(self, key, fn: Callable[[], None]):
        if not self.enabled:
            fn()
            return
        g = self.graphs.get(key)
        if g is None:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=stream):
                fn()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self.graphs[key] = g
        g.replay()


class LocalSteps:
    """One local step of this process's active workers: eager (all step), masked (Algorithm 3's
    idle workers keep their state) or the captured graph (`--cuda-graph`, same arithmetic)."""

    def __init__(self, runner: StepRunner, feed, dtype, steps_per_epoch: int):
        self.runner, self.feed, self.dtype, self.spe = runner, feed, dtype, steps_per_epoch
        self.captured = runner.cuda_graph

    def __call__(self, loop, lr: float, active: list[bool] | None):
        """Returns each replica's (loss, number correct), or None when the captured step sums
        them on the device itself (`runner.loss_sum`, `runner.correct`)."""
        r = self.runner
        if self.captured:
            s = loop.step - 1
            if s % self.spe == 0:   # a new epoch: its plan goes into the graph's static buffers
                r.begin_epoch(self.feed.plan(s // self.spe))
            r.set_lr(lr)
            r.step(s % self.spe)
            return None
        r.set_lr(lr)
        if active is None:
            x, y = self.feed.batch(loop.step)
            return r.update(x.to(self.dtype), y)
        x, y = self.feed.batch_per_worker(loop.worker_step_counts)
        return r.masked_update(x.to(self.dtype), y, active)
