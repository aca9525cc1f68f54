"""AdaComm (src/prsgd/algorithms/adacomm.py): the interval follows ceil(sqrt(F/F_0) tau_0),
decided at update-period boundaries from the epoch's reduced training loss; every period ends
with a round; the decided intervals and F_0 are checkpointed state.

The training runs (packed = horovodrun in fp64, resume across an interval change, E beyond the
run = Algorithm 1) are in tests/integration/test_adacomm.py, with these arguments.
"""
from __future__ import annotations

import math

import pytest

from prsgd.algorithms import algorithm_class, label
from prsgd.algorithms.adacomm import COLUMN, next_interval
from prsgd.algorithms.base import LoopState
from prsgd.core import config as config_mod
from prsgd.core.schedule import Adaptive, Periodic

# 2 workers x 32-image shards / batch 4 = 8 steps per epoch; tau_0 = 6 does not divide 8, so
# every epoch ends with the period's closing round.
BASE = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "64", "--test-subset",
        "16", "--batch-size", "4", "--epochs", "4", "--seed", "3", "--interval", "6",
        "--lr", "0.02", "--precision", "fp64", "--progress", "false", "--device", "cpu",
        "--eval-every", "0"]
ADACOMM = [*BASE, "--algorithm", "adacomm"]
PACKED = ["--backend", "packed", "--workers", "2"]


def algorithm(*flags, steps_per_epoch=8, epochs=4):
    cfg = config_mod.from_args([*ADACOMM, *PACKED, *flags])
    cfg.validate()
    return algorithm_class("adacomm")(cfg, workers=2, local_workers=[0, 1],
                                      steps_per_epoch=steps_per_epoch,
                                      total_steps=epochs * steps_per_epoch, backend="packed")


def round_steps(schedule, first: int, last: int) -> list[int]:
    return [t for t in range(first, last + 1) if schedule.events(t)]


def test_the_rule_by_hand():
    # ceil(sqrt(F/F0) tau0): F/F0 = 0.25 halves tau0; 0.5 gives ceil(0.7071 x 8) = 6
    assert next_interval(8, 2.0, 0.5, 64, 8) == 4
    assert next_interval(8, 2.0, 1.0, 64, 8) == 6
    assert next_interval(8, 2.0, 2.0, 64, 8) == 8            # F = F0: tau0
    assert next_interval(8, 2.0, 2.0 * 1.0001, 64, 8) == 9   # a loss above F0 lengthens it
    assert next_interval(8, 2.0, 1e-12, 64, 8) == 1          # never below 1
    assert next_interval(8, 1.0, 100.0, 16, 8) == 16         # never beyond the period
    # not a finite positive ratio: the current interval stays
    for f0, f in ((2.0, math.nan), (2.0, math.inf), (0.0, 1.0), (math.nan, 1.0)):
        assert next_interval(8, f0, f, 64, 5) == 5


def test_the_interval_follows_the_loss_sequence():
    """E = 2 epochs per update: F_0 is epoch 1's loss; after epochs 2, 4, 6 the next period's
    interval is ceil(sqrt(F/F_0) x 6) with F the last epoch's loss; metrics.csv records the
    interval each epoch ran with; the rounds are the schedule of those intervals."""
    a = algorithm("--adacomm-every-epochs", "2", epochs=8)
    losses = [4.0, 3.0, 2.5, 1.0, 0.9, 0.25, 0.2, 0.1]
    loop, recorded = LoopState(), []
    for e, f in enumerate(losses):
        loop.epoch = e
        a.end_epoch(None, loop, f)
        loop.epoch = e + 1
        recorded.append(a.metrics(loop)[COLUMN])
    expect = [6, math.ceil(math.sqrt(1.0 / 4.0) * 6), math.ceil(math.sqrt(0.25 / 4.0) * 6)]
    assert expect == [6, 3, 2]
    assert a.schedule.intervals == (6, 6, 3, 2, math.ceil(math.sqrt(0.1 / 4.0) * 6))
    assert recorded == [6, 6, 6, 6, 3, 3, 2, 2] and a.f0 == 4.0
    # period 0 (steps 1-16): every 6 steps and at its end; period 2 (33-48): every 3 steps
    assert round_steps(a.schedule, 1, 16) == [6, 12, 16]
    assert round_steps(a.schedule, 33, 48) == [35, 38, 41, 44, 47, 48]
    assert round_steps(a.schedule, 49, 64) == [50, 52, 54, 56, 58, 60, 62, 64]


def test_state_round_trips_into_a_fresh_algorithm():
    a = algorithm()
    loop = LoopState()
    for e, f in enumerate([3.0, 1.2, 0.8]):
        loop.epoch = e
        a.end_epoch(None, loop, f)
    b = algorithm()
    b.load_state_dict(a.state_dict())
    assert b.schedule == a.schedule and b.f0 == a.f0 == 3.0
    assert [bool(b.schedule.events(t)) for t in range(1, 33)] == \
        [bool(a.schedule.events(t)) for t in range(1, 33)]


def test_a_fixed_interval_is_algorithm_1():
    """With every I_p = I and periods a multiple of I: Periodic(I), round for round."""
    ada, per = Adaptive((4, 4, 4), 8, 2), Periodic(4, 2)
    assert all(ada.events(t) == per.events(t) for t in range(1, 25))
    # a period that I does not divide ends in an extra round
    assert round_steps(Adaptive((3, 3), 8, 2), 1, 16) == [3, 6, 8, 11, 14, 16]
    with pytest.raises(IndexError):                   # a period not decided yet: no guess
        Adaptive((3,), 8, 2).events(9)


def test_bad_every_epochs_is_refused_and_label():
    with pytest.raises(config_mod.ConfigError,
                       match=r"--adacomm-every-epochs: must be a positive integer \(got 0\)"):
        config_mod.from_args([*ADACOMM, *PACKED, "--adacomm-every-epochs", "0"]).validate()
    with pytest.raises(config_mod.ConfigError, match="applies only to --algorithm adacomm"):
        config_mod.from_args([*BASE, *PACKED, "--adacomm-every-epochs", "2"]).validate()
    cfg = config_mod.from_args([*ADACOMM, *PACKED, "--adacomm-every-epochs", "2"]).to_dict()
    assert label(cfg) == "AdaComm I0=6 every 2 ep"
    assert algorithm_class("adacomm").rounds_from_run
    assert not algorithm_class("prsgd").rounds_from_run
