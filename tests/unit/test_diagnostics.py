"""Theory diagnostics: consensus distance (by hand on a quadratic, packed and real Horovod ranks),
the Lemma 1 bound on real short runs, Corollary 1 in config.json."""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from prsgd.backends.packed import PackedComm
from prsgd.core.flat import FlatModel
from prsgd.core.diagnostics import Diagnostics, corollary1, lemma1_bound
from prsgd.core.schedule import Event


class Points(nn.Module):
    """n packed points x_r in R^d: the parameter of the quadratic f_r(x) = ½‖x − c_r‖²."""

    def __init__(self, n: int, d: int):
        super().__init__()
        self.x = nn.Parameter(torch.zeros(n, d))
        self.y = nn.Parameter(torch.zeros(n, 2))   # a second segment: sums must span segments


def test_corollary1_and_lemma1_formulas():
    c = corollary1(total_steps=4096, workers=8, interval=1)
    assert c["corollary1_max_interval"] == pytest.approx(8 / 8 ** 0.75)   # 4096^(1/4) = 8
    assert c["inside_corollary1"] is True
    assert corollary1(4096, 8, 2)["inside_corollary1"] is False          # 2 > 1.68
    assert corollary1(2 ** 20, 2, 16)["inside_corollary1"] is True       # 32 / 1.68 = 19.0
    assert lemma1_bound(0.1, 4, 2.0) == pytest.approx(4 * 0.01 * 16 * 2.0)


@pytest.mark.parametrize("interval", [1, 3])
def test_packed_consensus_on_quadratic_equals_hand_value_and_is_zero_after(interval):
    n, d, lr = 4, 5, 0.2
    model = Points(n, d)
    fm = FlatModel(model, replicas=n)
    comm = PackedComm(fm, n)
    diag = Diagnostics(fm, comm, horovod=False, num_workers=n)
    g = torch.Generator().manual_seed(1)
    cx, cy = torch.randn(n, d, generator=g), torch.randn(n, 2, generator=g)
    event = Event("global", (tuple(range(n)),))
    for _ in range(interval):
        fm.zero_grad()
        model.x.grad.copy_(model.x.detach() - cx)      # the exact gradient of ½‖x − c‖²
        model.y.grad.copy_(model.y.detach() - cy)
        fm.sgd_step(lr, 0.0, 0.0)
        diag.after_step(lr)
    diag.average_(fm.state, event)
    q = 1 - (1 - lr) ** interval
    spread = ((cx - cx.mean(0)).square().sum() + (cy - cy.mean(0)).square().sum()) / n
    assert float(diag.consensus[-1]) == pytest.approx(q * q * float(spread), rel=1e-5)
    row = diag.epoch_row(1, interval, interval)
    diag.average_(fm.state, event)          # a round right after one: the models agree
    assert float(diag.consensus[-1]) == pytest.approx(0.0, abs=1e-10)
    assert row["consensus_mean"] == pytest.approx(q * q * float(spread), rel=1e-5)
    assert row["rounds"] == 1


def test_packed_consensus_of_groups():
    """Hier-AVG style local rounds: each worker's distance to its own group's mean."""
    n, d = 4, 3
    model = Points(n, d)
    fm = FlatModel(model, replicas=n)
    with torch.no_grad():
        model.x.copy_(torch.tensor([[0.0] * d, [2.0] * d, [10.0] * d, [14.0] * d]))
    diag = Diagnostics(fm, PackedComm(fm, n), horovod=False, num_workers=n)
    c = diag.packed_consensus(Event("local", ((0, 1), (2, 3))))
    # groups {0,1}: each 1 away per coordinate; {2,3}: each 2 away per coordinate.
    assert float(c) == pytest.approx((2 * 1 * d + 2 * 4 * d) / n)

