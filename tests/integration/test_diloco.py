"""DiLoCo (src/prsgd/algorithms/diloco.py): rounds through an outer Nesterov optimizer.

- With outer lr 1 and no outer momentum a round makes x − (x − a) where Algorithm 1 makes a
  (the average): equal up to rounding, NOT bitwise; we assert 1e-12 in fp64.
- The packed backend equals `horovodrun -np 2 --gloo` in fp64.
- An interrupted run resumes bit-identically, and only because the outer momentum (and the
  global copy) are in the checkpoint: zeroing the saved momentum changes the result.

2 workers x 16-image shards / batch 4 = 4 steps per epoch; I = 2: 2 rounds per epoch.
"""
from __future__ import annotations


import pandas as pd
import pytest
import torch

from conftest import StopAt, horovodrun, load_ckpt, metric_frame, replica_rows
from prsgd.core import config as config_mod
from prsgd.records.lifecycle import Interrupted
from prsgd.records.state import save_checkpoint
from prsgd.core.flat import FlatModel
from prsgd.core.models import ResNet20
from prsgd.train import run
from unit.test_diloco import BASE, DILOCO, PACKED   # the same runs in both tiers


def train(out, *args, hooks=None):
    return run(config_mod.from_args([*args, "--out", str(out)]), hooks=hooks)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Algorithm 1, DiLoCo with outer lr 1 / momentum 0, and DiLoCo with its defaults (packed)."""
    out = tmp_path_factory.mktemp("diloco")
    train(out, *BASE, *PACKED, "--run-id", "alg1")
    train(out, *DILOCO, *PACKED, "--outer-lr", "1", "--outer-momentum", "0", "--run-id", "plain")
    train(out, *DILOCO, *PACKED, "--run-id", "d")
    return out


def initial_params() -> torch.Tensor:
    torch.manual_seed(3)   # --seed 3: the model every worker starts from
    return FlatModel(ResNet20(replicas=1).double(), 1).params.detach().clone()


def test_outer_lr_one_without_momentum_is_algorithm_1(runs):
    x, y = load_ckpt(runs / "alg1")["ranks"][0]["flat"], load_ckpt(runs / "plain")["ranks"][0]["flat"]
    # DiLoCo makes x - (x - a) where Algorithm 1 makes a: equal up to rounding only.
    assert float((x - y).abs().max()) < 1e-12 * float(x.abs().max())
    # The copy DiLoCo keeps is the last global model, i.e. the weights after the last round.
    P = FlatModel(ResNet20(replicas=2), 2).num_params
    assert torch.equal(load_ckpt(runs / "plain")["ranks"][0]["algorithm"][0]["copy"], y[:P])
    # Not vacuous: the run made its rounds and moved away from the initial model.
    assert int(metric_frame(runs / "plain")["rounds"].iloc[-1]) == 4
    assert float((replica_rows(y, 2)[0][:P // 2] - initial_params()).abs().max()) > 1e-3


def test_default_outer_optimizer_differs_from_algorithm_1(runs):
    """Nesterov 0.9 / lr 0.7 (the defaults) really act: the weights leave Algorithm 1's."""
    a1 = load_ckpt(runs / "alg1")["ranks"][0]["flat"]
    dl = load_ckpt(runs / "d")
    assert float((a1 - dl["ranks"][0]["flat"]).abs().max()) > 1e-3
    assert float(dl["ranks"][0]["algorithm"][0]["outer_momentum"].abs().max()) > 0
    cfg = config_mod.from_args(DILOCO)
    o = cfg.algo
    assert (o.outer_lr, o.outer_momentum, o.outer_nesterov) == (0.7, 0.9, True)


def test_resume_is_bit_identical_and_needs_the_outer_momentum(runs, tmp_path):
    args = [*DILOCO, *PACKED, "--run-id", "d"]
    whole = load_ckpt(runs / "d")
    with pytest.raises(Interrupted):                    # step 7: mid epoch 2, after round 3
        train(tmp_path / "cut", *args, hooks=StopAt(7))
    cut_dir = tmp_path / "cut" / "d"
    first = load_ckpt(cut_dir)
    assert first["epoch"] == 1
    saved = first["ranks"][0]["algorithm"][0]["outer_momentum"]
    assert float(saved.abs().max()) > 0                 # 2 rounds: the momentum is non-zero
    # Spoil a copy of the checkpoint: the same run with its outer momentum forgotten.
    spoiled_dir = tmp_path / "spoiled" / "d"
    spoiled_dir.mkdir(parents=True)
    for f in ("config.json", "metrics.csv"):
        (spoiled_dir / f).write_bytes((cut_dir / f).read_bytes())
    first["ranks"][0]["algorithm"][0]["outer_momentum"] = torch.zeros_like(saved)
    save_checkpoint(first, spoiled_dir / "checkpoint.pt")

    train(tmp_path / "cut", *args, "--resume")
    train(tmp_path / "spoiled", *args, "--resume")
    resumed, spoiled = load_ckpt(cut_dir), load_ckpt(spoiled_dir)
    assert torch.equal(resumed["ranks"][0]["flat"], whole["ranks"][0]["flat"])
    for k in ("copy", "outer_momentum"):
        assert torch.equal(resumed["ranks"][0]["algorithm"][0][k],
                           whole["ranks"][0]["algorithm"][0][k])
    pd.testing.assert_frame_equal(metric_frame(cut_dir), metric_frame(runs / "d"))
    assert float((spoiled["ranks"][0]["flat"] - whole["ranks"][0]["flat"]).abs().max()) > 1e-6


@pytest.mark.horovod
def test_packed_equals_horovodrun(tmp_path):
    horovodrun(2, ["-m", "prsgd.train", *DILOCO, "--out", str(tmp_path), "--run-id", "hvd"],
               timeout=600)
    h = load_ckpt(tmp_path / "hvd")
    p = load_ckpt(train(tmp_path, *DILOCO, *PACKED, "--run-id", "packed"))
    packed = replica_rows(p["ranks"][0]["flat"], 2)
    fm = FlatModel(ResNet20(replicas=2), 2)
    copies = p["ranks"][0]["algorithm"][0]["copy"].view(-1)
    for r in range(2):
        ref = h["ranks"][r]["flat"]
        assert float((packed[r] - ref).norm() / ref.norm()) < 1e-9, f"worker {r}"
        hc = h["ranks"][r]["algorithm"][0]["copy"]
        pc = torch.cat([copies[o:o + k].view(2, -1)[r] for o, k in
                        fm.segments[:len(fm.momentum_segments)]])
        assert float((pc - hc).norm() / hc.norm()) < 1e-9, f"worker {r} outer copy"
    pd.testing.assert_frame_equal(metric_frame(tmp_path / "packed"), metric_frame(tmp_path / "hvd"),
                                  check_exact=False, rtol=1e-8)
    assert float((packed[0] - packed[1]).norm()) > 0   # the workers drift between rounds
