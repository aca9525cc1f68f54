"""Stich's speed-up experiment: the logistic-regression model/data path through the trainer, the
optimum, the speed-up measurement at a tiny size, and the script entry."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from prsgd.experiments import stich
from prsgd import train
from prsgd.data.features import FeatureData, synthetic_logreg
from prsgd.core.models import LogReg, replica_state
from prsgd.core.schedule import lr_at


def test_logreg_packed_replicas_are_independent_and_loss_is_logistic():
    torch.manual_seed(0)
    n, d, b = 3, 5, 7
    packed = LogReg(replicas=n, dim=d)
    with torch.no_grad():
        packed.weight.normal_()
        packed.bias.normal_()
    x = torch.randn(b, n * d)
    out = packed(x)
    assert out.shape == (b, n, 2)
    for r in range(n):
        single = LogReg(1, d)
        single.load_state_dict(replica_state(packed.state_dict(), n, r))
        assert torch.allclose(single(x[:, r * d:(r + 1) * d])[:, 0], out[:, r], atol=1e-6)
    y = torch.randint(0, 2, (b,))
    z = x[:, :d] @ packed.weight[0] + packed.bias[0]
    logistic = torch.log1p(torch.exp(-(2 * y - 1) * z)).mean()
    assert F.cross_entropy(out[:, 0], y).item() == pytest.approx(logistic.item(), rel=1e-5)


def test_feature_batches_stack_replicas_in_columns():
    ds = synthetic_logreg(64, 8, seed=1)
    fd = FeatureData(ds.train_x, ds.train_y, torch.device("cpu"))
    index = torch.tensor([[0, 1, 2], [10, 11, 12]])
    x, y = fd.batch(index)
    d = ds.train_x.shape[1]
    assert x.shape == (3, 2 * d) and y.shape == (3, 2)
    assert torch.equal(x[1, d:], ds.train_x[11]) and int(y[2, 1]) == int(ds.train_y[12])
    assert synthetic_logreg(64, 8, seed=1).checksum == ds.checksum != synthetic_logreg(64, 8, 2).checksum


def test_optimum_is_stationary_and_minimal():
    ds = synthetic_logreg(512, 8, seed=0)
    lam = 1 / 512
    f_star, p = stich.optimum(ds.train_x, ds.train_y, lam)
    x, y = ds.train_x.double(), ds.train_y.double()
    q = p.clone().requires_grad_(True)
    stich.objective(q, x, y, lam).backward()
    assert float(q.grad.norm()) < 1e-10
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        other = p + 1e-3 * torch.randn(p.shape, generator=g, dtype=torch.float64)
        assert float(stich.objective(other, x, y, lam)) > f_star


def test_lr_decay_shift():
    assert lr_at(1, base_lr=2.0, steps_per_epoch=10, shift=64) == 2.0
    assert lr_at(65, base_lr=2.0, steps_per_epoch=10, shift=64) == pytest.approx(1.0)
    assert lr_at(65, base_lr=2.0, steps_per_epoch=10) == 2.0          # off by default


def test_theory_curve_solves_its_equation_and_fit_recovers_constants():
    a, b, eps = 3.0, 50.0, 0.01
    for k, h in ((1, 1), (4, 2), (16, 8)):
        t = stich.theory_steps(k, h, eps, a, b)
        assert a / (k * t) + b * h * h / t ** 2 == pytest.approx(eps)
    rows = [{"K": k, "H": h, "eps": eps, "steps_to_eps": float(stich.theory_steps(k, h, eps, a, b))}
            for k in (1, 2, 8) for h in (1, 4)]
    fa, fb = stich.fit_theory(rows)
    assert (fa, fb) == (pytest.approx(a, rel=1e-6), pytest.approx(b, rel=1e-6))
    assert stich.theory_speedup(4, 1, eps, a, 0.0) == pytest.approx(4.0)   # no drift term: S = K


def test_model_dataset_mismatch_is_a_clear_error(capsys):
    assert train.main(["--preset", "smoke", "--model", "logreg", "--backend", "packed",
                       "--workers", "2"]) == 2
    assert "--model" in capsys.readouterr().err
