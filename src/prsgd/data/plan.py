"""The batches of an epoch and their augmentation, on the training device.

Every epoch has one global permutation, seeded by (seed, epoch) and identical on every worker,
split into N disjoint shards exactly as `torch.utils.data.DistributedSampler` does. Augmentation
draws (crop offsets, flips) are seeded by (seed, epoch, worker), so a worker gets the same batches
whether it is a Horovod rank or a replica of the packed backend. Crop and flip are one gather
from the zero-padded uint8 images, done in batch on the training device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PAD = 4


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=g)


def shard(perm: torch.Tensor, worker: int, num_workers: int) -> torch.Tensor:
    """DistributedSampler's split: pad by wrapping to a multiple of N, then every N-th index."""
    total = -(-len(perm) // num_workers) * num_workers
    padded = torch.cat([perm, perm[: total - len(perm)]]) if total > len(perm) else perm
    return padded[worker:total:num_workers]


def shard_size(num_samples: int, num_workers: int) -> int:
    return -(-num_samples // num_workers)


def steps_per_epoch(num_samples: int, num_workers: int, batch_size: int) -> int:
    """Local steps per global epoch (the last partial batch of a shard is dropped)."""
    return shard_size(num_samples, num_workers) // batch_size


@dataclass
class EpochPlan:
    """For workers w_1..w_n of one epoch: (n, steps, B) sample indices and augmentation draws."""
    index: torch.Tensor
    oy: torch.Tensor
    ox: torch.Tensor
    flip: torch.Tensor

    def to(self, device) -> "EpochPlan":
        return EpochPlan(*(t.to(device, non_blocking=True) for t in
                           (self.index, self.oy, self.ox, self.flip)))


def epoch_plan(num_samples: int, workers: list[int], num_workers: int, batch_size: int,
               seed: int, epoch: int, augment: bool = True) -> EpochPlan:
    perm = epoch_permutation(num_samples, seed, epoch)
    steps = steps_per_epoch(num_samples, num_workers, batch_size)
    idx, oy, ox, fl = [], [], [], []
    for w in workers:
        s = shard(perm, w, num_workers)[: steps * batch_size].view(steps, batch_size)
        g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 4099 + w)
        if augment:
            o = torch.randint(0, 2 * PAD + 1, (2, steps, batch_size), generator=g)
            f = torch.randint(0, 2, (steps, batch_size), generator=g).bool()
        else:
            o = torch.full((2, steps, batch_size), PAD)
            f = torch.zeros(steps, batch_size, dtype=torch.bool)
        idx.append(s), oy.append(o[0]), ox.append(o[1]), fl.append(f)
    return EpochPlan(torch.stack(idx), torch.stack(oy), torch.stack(ox), torch.stack(fl))


class DeviceData:
    """The training images zero-padded once and held on the device; batches are one gather."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device):
        self.padded = torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD)).to(device)
        self.labels = labels.to(device)
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
        self.ar = torch.arange(32, device=device)
        self.ch = torch.arange(3, device=device).view(1, 3, 1, 1)

    def batch(self, index, oy, ox, flip) -> tuple[torch.Tensor, torch.Tensor]:
        """index/oy/ox/flip: (n, B). Returns x (B, 3n, 32, 32) float, y (B, n)."""
        n, b = index.shape
        rows = oy.reshape(-1, 1) + self.ar                             # (nB, 32)
        cols = torch.where(flip.reshape(-1, 1), 31 - self.ar, self.ar) + ox.reshape(-1, 1)
        img = self.padded[index.reshape(-1, 1, 1, 1), self.ch, rows[:, None, :, None],
                          cols[:, None, None, :]]                      # (nB, 3, 32, 32) uint8
        x = (img.float() - self.mean) / self.std
        x = x.view(n, b, 3, 32, 32).transpose(0, 1).reshape(b, 3 * n, 32, 32)
        return x, self.labels[index].transpose(0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std
