"""Algorithm 3 (unequal local steps per round) on the packed backend: the workers advance in
lockstep iterations in which only those with steps left in the round step; the idle ones keep
their weights, BN statistics and momentum. It must compute what `horovodrun -np 2` computes.

2 workers x 64-image shards / batch 8 = 8 steps per epoch; worker 0 averages after 2 of its
steps, worker 1 after 3 (a reported epoch = 8 // 3 = 2 rounds; 3 epochs of steps = 8 rounds).
"""
from __future__ import annotations

from conftest import schedule_of


import pytest

from prsgd.core import config as config_mod
from prsgd.core.schedule import GLOBAL

HETERO = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "128", "--test-subset",
          "64", "--batch-size", "8", "--epochs", "3", "--seed", "7", "--algorithm", "hetero",
          "--worker-intervals", "2,3", "--momentum", "0.9", "--precision", "fp64",
          "--progress", "false"]


def test_lockstep_schedule():
    s = schedule_of("hetero", workers=3, worker_intervals=(2, 3, 1))
    assert [s.lockstep(j)[0] for j in (1, 2, 3)] == \
        [[True, True, True], [True, True, False], [False, True, False]]
    assert [bool(s.lockstep(j)[1]) for j in (1, 2, 3)] == [False, False, True]
    assert s.lockstep(3)[1][0].level == GLOBAL


@pytest.mark.parametrize("extra, message", [
    (["--round-budget-s", "0.5", "--worker-intervals", ""], "--round-budget-s: needs the horovod"),
    (["--diagnostics"], "--diagnostics: not with --algorithm hetero on the packed"),
    (["--slowdown", "1,2"], "--slowdown: needs the horovod backend"),
])
def test_packed_hetero_refuses_what_needs_separate_processes(extra, message):
    with pytest.raises(config_mod.ConfigError, match=message):
        config_mod.from_args([*HETERO, "--backend", "packed", "--workers", "2", *extra]).validate()
