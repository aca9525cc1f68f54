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
from pathlib import Path
from types import SimpleNamespace


from prsgd.records import checkpoint
from prsgd.core.config import preset

from conftest import horovodrun

# 2 workers x 64-image shards / batch 8 = 8 steps per epoch.
BASE = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "128", "--test-subset",
        "64", "--batch-size", "8", "--epochs", "3", "--seed", "7"]
GAR = [*BASE, "--algorithm", "gradient_allreduce", "--momentum", "0.9"]
# Algorithm 3: worker 0 averages after 2 of its steps, worker 1 after 3. A reported epoch is
# 2 rounds (8 steps per epoch // max(I_i) = 3); 3 epochs of steps are 8 rounds = 4 epochs.
HETERO = [*BASE, "--algorithm", "hetero", "--worker-intervals", "2,3"]


def resume(args: list[str], run_dir: Path, from_epoch: int) -> None:
    res = horovodrun(2, ["-m", "prsgd.train", *args, "--out", str(run_dir.parent), "--run-id",
                         run_dir.name, "--resume", "--progress", "true"], timeout=300)
    assert f"resumed from the checkpoint of epoch {from_epoch}" in res.stdout, res.stdout[-3000:]


# --- the gradient-allreduce baseline ----------------------------------------------------------
# --- Algorithm 3 --------------------------------------------------------------------------------
def jsonl(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_rounds_log_goes_with_a_start_over_and_a_restart(tmp_path):
    """The other two ways a run directory is reused: --resume of a run killed before its first
    checkpoint starts over, and --restart; neither may append to the old rounds.jsonl."""
    cfg = preset("smoke", algorithm="hetero", worker_intervals=(2, 3), out=str(tmp_path),
                 run_id="r")
    d = tmp_path / "r"

    def checkpointer():
        return checkpoint.Checkpointer(
            cfg=cfg, comm=SimpleNamespace(rank=0), runs=[SimpleNamespace(run_dir=d)], parts={},
            loop=None, workers=2, dataset=SimpleNamespace(checksum="0" * 64), num_epochs=1)

    def killed_before_its_first_checkpoint():
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps({
            "config": cfg.to_dict(), "derived": {"workers": 2},
            "provenance": {"dataset": {"sha256": "0" * 64}}}))
        (d / "rounds.jsonl").write_text('{"round": 1, "epoch": 1, "steps": [2, 3]}\n')
        (d / "metrics.csv").write_text("epoch\n")

    killed_before_its_first_checkpoint()
    cfg.resume = True
    assert checkpointer()._decide() is None
    assert not (d / "rounds.jsonl").exists() and not (d / "metrics.csv").exists()

    killed_before_its_first_checkpoint()
    cfg.resume, cfg.restart = False, True
    assert checkpointer()._decide() is None
    assert list(d.iterdir()) == []
