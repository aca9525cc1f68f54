"""Evaluation of each run's averaged model (test set, optionally the full training set), on a
copy: the workers' local models are untouched."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from prsgd.data import plan as plan_mod


@torch.no_grad()
def evaluate_packed(model, images: torch.Tensor, labels: torch.Tensor, device, copies: int,
                    batch: int = 1000, channels_last: bool = False):
    """Per-replica (loss sums, numbers correct) of a `replicas=copies` model in eval mode; every
    replica sees the same inputs (copies == 1: an ordinary model)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    loss = torch.zeros(copies, device=device, dtype=torch.float64)
    correct = torch.zeros(copies, device=device, dtype=torch.int64)
    for i in range(0, len(labels), batch):
        x = images[i:i + batch].to(device)
        image = x.dim() == 4
        x = (plan_mod.normalize(x) if image else x).to(dtype)
        y = labels[i:i + batch].to(device)
        if copies > 1:
            x = x.repeat(1, copies, 1, 1) if image else x.repeat(1, copies)
        if channels_last and image:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x).to(dtype)                                        # (b, copies, classes)
        loss += F.cross_entropy(out.transpose(1, 2), y[:, None].expand(-1, copies),
                                reduction="none").double().sum(0)
        correct += (out.argmax(-1) == y[:, None]).sum(0)
    return loss, correct, len(labels)


def averaged_eval(parts, runs, comm, cfg) -> list[dict]:
    """Loss/accuracy of each run's averaged model: each rank evaluates its shard of the sets,
    one metric reduction sums them."""
    p = parts
    for c, run in enumerate(runs):
        p.eval_fm.set_replica_(c, run.comm.average_copy(p.fm.state).to(p.eval_fm.flat.device))
    ds, C = p.dataset, len(runs)
    shard = slice(comm.rank, None, comm.size)
    sets = [(ds.test_x[shard], ds.test_y[shard])]
    if cfg.eval_train_loss:
        sets.append((ds.train_x[shard], ds.train_y[shard]))
    results = [evaluate_packed(p.eval_model, x, y, p.device, C,
                               channels_last=cfg.channels_last) for x, y in sets]
    # (C, sets, 3): per run and set, [loss sum, correct, count]
    local = torch.stack([torch.stack([l.cpu(), c.cpu().double(),
                                      torch.full((C,), float(k), dtype=torch.float64)], 1)
                         for l, c, k in results], 1)
    outs = []
    for t in comm.sum_metrics(local):
        out = {"test_loss": float(t[0, 0] / t[0, 2]), "test_acc": float(t[0, 1] / t[0, 2])}
        if cfg.eval_train_loss:
            out["full_train_loss"] = float(t[1, 0] / t[1, 2])
        outs.append(out)
    return outs
