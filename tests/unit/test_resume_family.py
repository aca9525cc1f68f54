"""Exact resume beyond Algorithm 1: the gradient-allreduce baseline (momentum with averaged
gradients) and Algorithm 3 (workers make different numbers of steps per round).

Each config is run uninterrupted, and a twin of it is stopped after its first epoch
deterministically by `--max-steps` (for these configs it only decides where the run ends: neither
the lr nor the schedule of the steps made depends on it). The twin's records are then made to say
what a run of the full config killed after epoch 1 would say (a resume compares the whole config,
so `--max-steps` itself may not change), and it is resumed by a fresh `horovodrun -np 2 --gloo
python -m prsgd.train --resume`: it must end bit-identical to the uninterrupted run.
"""
from __future__ import annotations

import json
from types import SimpleNamespace


from prsgd.records import policy
from prsgd.core.config import preset



def test_rounds_log_goes_with_a_start_over_and_a_restart(tmp_path):
    """The other two ways a run directory is reused: --resume of a run killed before its first
    checkpoint starts over, and --restart; neither may append to the old rounds.jsonl."""
    cfg = preset("smoke", algorithm="hetero", worker_intervals=(2, 3), out=str(tmp_path),
                 run_id="r")
    d = tmp_path / "r"

    def decide():
        return policy.open_run_dirs(cfg, [d], 2, SimpleNamespace(checksum="0" * 64))[0]

    def killed_before_its_first_checkpoint():
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps({
            "config": cfg.to_dict(), "derived": {"workers": 2},
            "provenance": {"dataset": {"sha256": "0" * 64}}}))
        (d / "rounds.jsonl").write_text('{"round": 1, "epoch": 1, "steps": [2, 3]}\n')
        (d / "metrics.csv").write_text("epoch\n")

    killed_before_its_first_checkpoint()
    cfg.resume = True
    assert decide() is None
    assert not (d / "rounds.jsonl").exists() and not (d / "metrics.csv").exists()

    killed_before_its_first_checkpoint()
    cfg.resume, cfg.restart = False, True
    assert decide() is None
    assert list(d.iterdir()) == []
