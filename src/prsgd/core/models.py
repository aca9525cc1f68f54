"""ResNet20 for CIFAR (He et al. 2016, Section 4.2), optionally N independent replicas in one module.

`ResNet20(replicas=1)` is the ordinary network: 3 stages of 3 basic blocks, 16/32/64 channels,
parameter-free "option A" shortcuts (stride-2 subsampling plus zero channel padding), 269,722
parameters. With `replicas=n` every convolution is grouped (n groups), every BatchNorm covers
n*C channels and the classifier is a batched matmul, so the n replicas never mix: replica r
sees input channels [3r, 3r+3) and produces logits[:, r]. Replica r's slice of every tensor is
the r-th of n equal chunks along dim 0, which is what `replica_state` and `tile_state` use.

Input: (B, 3n, 32, 32), replica r's batch stacked in channels 3r..3r+2. Output: (B, n, 10).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, n: int):
        super().__init__()
        self.n, self.cin, self.cout, self.stride = n, cin, cout, stride
        self.conv1 = nn.Conv2d(cin * n, cout * n, 3, stride, 1, groups=n, bias=False)
        self.bn1 = nn.BatchNorm2d(cout * n)
        self.conv2 = nn.Conv2d(cout * n, cout * n, 3, 1, 1, groups=n, bias=False)
        self.bn2 = nn.BatchNorm2d(cout * n)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.cin == self.cout:
            return x
        # Option A: subsample, then zero-pad channels, per replica (channels are replica-major).
        x = x[:, :, ::self.stride, ::self.stride]
        b, _, h, w = x.shape
        pad = (self.cout - self.cin) // 2
        x = x.reshape(b, self.n, self.cin, h, w)
        x = F.pad(x, (0, 0, 0, 0, pad, self.cout - self.cin - pad))
        return x.reshape(b, self.n * self.cout, h, w)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class GroupedLinear(nn.Module):
    """n independent Linear(cin, cout) layers; weight (n*cout, cin) so replica chunks are rows."""

    def __init__(self, cin: int, cout: int, n: int):
        super().__init__()
        self.n, self.cin, self.cout = n, cin, cout
        self.weight = nn.Parameter(torch.empty(n * cout, cin))
        self.bias = nn.Parameter(torch.zeros(n * cout))

    def forward(self, x):  # x: (B, n*cin) -> (B, n, cout)
        b = x.shape[0]
        w = self.weight.view(self.n, self.cout, self.cin)
        y = torch.einsum("bni,noi->bno", x.view(b, self.n, self.cin), w)
        return y + self.bias.view(1, self.n, self.cout)


class ResNet20(nn.Module):
    def __init__(self, replicas: int = 1, num_classes: int = 10, depth: int = 20):
        super().__init__()
        assert (depth - 2) % 6 == 0, "depth must be 6k+2"
        blocks = (depth - 2) // 6
        n = self.replicas = replicas
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3 * n, 16 * n, 3, 1, 1, groups=n, bias=False)
        self.bn1 = nn.BatchNorm2d(16 * n)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1, n))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = GroupedLinear(64, num_classes, n)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, GroupedLinear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def averaged_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The tensors an averaging round covers, in a fixed order: parameters, then BN statistics.

    `num_batches_tracked` is left out: BN uses a fixed momentum, so it never enters the maths.
    """
    params = [(k, p) for k, p in model.named_parameters()]
    stats = [(k, b) for k, b in model.named_buffers() if not k.endswith("num_batches_tracked")]
    return params + stats


def replica_state(packed_state: dict, n: int, r: int) -> dict:
    """Replica r's state_dict (as for `replicas=1`) out of a packed model's state_dict."""
    out = {}
    for k, v in packed_state.items():
        out[k] = v if v.dim() == 0 else v.reshape(n, -1)[r].reshape(-1, *v.shape[1:])
    return out


def tile_state(single_state: dict, n: int) -> dict:
    """A packed state_dict whose n replicas all equal the given `replicas=1` state_dict."""
    return {k: v if v.dim() == 0 else v.repeat(n, *([1] * (v.dim() - 1)))
            for k, v in single_state.items()}


class LogReg(nn.Module):
    """Binary logistic regression, optionally n packed replicas (Stich's convex experiment).

    Parameters: weight (n, dim) and bias (n,), so replica r's slice is chunk r along dim 0 as for
    ResNet20. Input (B, n*dim), replica r's features in columns [r*dim, (r+1)*dim). Output
    (B, n, 2) = [0, a·w + b]: cross-entropy on these two logits IS the logistic loss
    log(1 + exp(−y' (a·w + b))) with y' = ±1, so the train loop's loss needs no special case.
    Zero-initialised (Stich starts from x0 = 0).
    """

    def __init__(self, replicas: int = 1, dim: int = 32):
        super().__init__()
        self.replicas, self.dim = replicas, dim
        self.weight = nn.Parameter(torch.zeros(replicas, dim))
        self.bias = nn.Parameter(torch.zeros(replicas))

    def forward(self, x):
        b = x.shape[0]
        z = torch.einsum("bnd,nd->bn", x.view(b, self.replicas, self.dim), self.weight)
        z = z + self.bias
        return torch.stack([torch.zeros_like(z), z], dim=-1)
