"""Feature-vector data for the convex experiments (Stich's local-SGD speed-up, `stich.py`).

`synthetic_logreg`: a seeded binary classification set standing in for w8a (which cannot be
downloaded here). Features a_i ~ N(0, I_d / d) (so ‖a_i‖ ≈ 1 and the logistic loss is about
1/4-smooth), a hidden direction w* ~ N(0, I_d) scaled to norm 4, and labels drawn from the
logistic model P(y=1 | a) = σ(a·w*): noisy and not separable, so the regularised optimum is
finite and SGD's gradient noise does not vanish at it. Same Dataset type as the image sources;
`train_x` is (M, d) float32 instead of uint8 images, and there is no augmentation.

`FeatureData.batch` has `DeviceData.batch`'s signature, so the train loop is unchanged: it
returns x (B, n*d), replica r's batch in columns [r*d, (r+1)*d), and y (B, n).
"""
from __future__ import annotations

import hashlib

import torch

from prsgd.data.dataset import Dataset

DIM = 32
SIGNAL_NORM = 4.0


def synthetic_logreg(n_train: int = 8192, n_test: int = 1024, seed: int = 0,
                     dim: int = DIM) -> Dataset:
    g = torch.Generator().manual_seed(7919 + seed)
    w_star = torch.randn(dim, generator=g, dtype=torch.float64)
    w_star *= SIGNAL_NORM / w_star.norm()

    def draw(n):
        a = torch.randn(n, dim, generator=g, dtype=torch.float64) / dim ** 0.5
        p = torch.sigmoid(a @ w_star)
        y = (torch.rand(n, generator=g, dtype=torch.float64) < p).long()
        return a.float(), y

    tx, ty = draw(n_train)
    vx, vy = draw(n_test)
    desc = f"synthetic_logreg(n_train={n_train}, n_test={n_test}, dim={dim}, seed={seed})"
    return Dataset(tx, ty, vx, vy, "synthetic-logreg", desc,
                   hashlib.sha256(f"synthetic-logreg-v1-{n_train}-{n_test}-{dim}-{seed}".encode())
                   .hexdigest())


class FeatureData:
    """Training features held on the device; a batch for n workers is one gather."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, device: torch.device):
        self.x = features.to(device)
        self.labels = labels.to(device)

    def batch(self, index, oy=None, ox=None, flip=None) -> tuple[torch.Tensor, torch.Tensor]:
        """index: (n, B). Returns x (B, n*d), y (B, n); crop/flip draws are ignored."""
        n, b = index.shape
        x = self.x[index]                                  # (n, B, d)
        return x.transpose(0, 1).reshape(b, -1), self.labels[index].transpose(0, 1)
