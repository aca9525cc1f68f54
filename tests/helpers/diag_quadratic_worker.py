"""Run by tests/test_diagnostics.py under `horovodrun -np N --gloo`: local SGD on the quadratic
f_i(x) = ½‖x − c_i‖² (gradient x − c_i, known exactly) with HorovodComm + Diagnostics; prints one
JSON line per rank with the logged consensus distance and what it must be by hand."""
import json
import sys

import torch
import torch.nn as nn

from prsgd.backends.horovod import HorovodComm
from prsgd.core.flat import FlatModel
from prsgd.core.diagnostics import Diagnostics
from prsgd.core.schedule import Event
from prsgd.backends.horovod import init_horovod

I, LR, D = int(sys.argv[1]), 0.1, 7


class Point(nn.Module):
    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(torch.zeros(1, D))


hvd = init_horovod()
N, rank = hvd.size(), hvd.rank()
centers = torch.randn(N, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
fm = FlatModel(Point())
comm = HorovodComm(hvd)
comm.broadcast_(fm.flat)
diag = Diagnostics(fm, comm, horovod=True, num_workers=N)
event = Event("global", (tuple(range(N)),))
logged = []
for round_ in range(2):
    for _ in range(I):
        fm.grad.copy_(fm.params - centers[rank].float())
        diag.after_step(LR)
        fm.sgd_step(LR, 0.0, 0.0)
    diag.average_(fm.state, event)
    logged.append(float(diag.consensus[-1]))
# By hand: from a common x, I steps give x_i = c_i + (1-γ)^I (x − c_i), so
# x_i − x̄ = (1 − (1−γ)^I)(c_i − c̄) and the consensus is (1 − (1−γ)^I)² mean‖c_i − c̄‖².
spread = float((centers - centers.mean(0)).square().sum(1).mean())
expected = (1 - (1 - LR) ** I) ** 2 * spread
# After two rounds from x = 0 the average is c̄ (1 − q²), q = (1−γ)^I.
xbar = float((fm.params.double() - centers.mean(0) * (1 - (1 - LR) ** (2 * I))).abs().max())
row = diag.epoch_row(1, 2 * I, I)
# One more round with no step since the last: what the round path measures is then 0.
diag.average_(fm.state, event)
after = float(diag.consensus[-1])
print(json.dumps({"rank": rank, "logged": logged, "expected": expected, "after": after,
                  "row": row, "x_err": xbar}), flush=True)
