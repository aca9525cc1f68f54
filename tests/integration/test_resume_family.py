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

import pytest
import torch

from prsgd.core.flat import FlatModel
from prsgd.core.models import ResNet20

from conftest import ROOT, horovodrun, killed_after_first_checkpoint
from conftest import load_ckpt, metric_rows, run_status

# 2 workers x 64-image shards / batch 8 = 8 steps per epoch.
BASE = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "128", "--test-subset",
        "64", "--batch-size", "8", "--epochs", "3", "--seed", "7"]
GAR = [*BASE, "--algorithm", "gradient_allreduce", "--momentum", "0.9"]
# Algorithm 3: worker 0 averages after 2 of its steps, worker 1 after 3. A reported epoch is
# 2 rounds (8 steps per epoch // max(I_i) = 3); 3 epochs of steps are 8 rounds = 4 epochs.
HETERO = [*BASE, "--algorithm", "hetero", "--worker-intervals", "2,3"]


@pytest.fixture(scope="module")
def first_runs(tmp_path_factory) -> Path:
    """OUT/<name>/run for the uninterrupted runs (`*_ref`) and the twins stopped after epoch 1
    (`*_cut`: 8 steps; Algorithm 3: 6 reference steps = 2 rounds). One Horovod launch for all
    four (tests/helpers/family_worker.py): starting Horovod and torch costs more than these runs."""
    out = tmp_path_factory.mktemp("resume")
    runs = {"gar_ref": GAR, "gar_cut": [*GAR, "--max-steps", "8"],
            "het_ref": HETERO, "het_cut": [*HETERO, "--max-steps", "6"]}
    horovodrun(2, [str(ROOT / "tests" / "helpers" / "family_worker.py"), str(out), json.dumps(runs)],
               timeout=600)
    for name in ("gar", "het"):
        killed_after_first_checkpoint(out / f"{name}_cut" / "run", out / f"{name}_ref" / "run")
    return out


def resume(args: list[str], run_dir: Path, from_epoch: int) -> None:
    res = horovodrun(2, ["-m", "prsgd.train", *args, "--out", str(run_dir.parent), "--run-id",
                         run_dir.name, "--resume", "--progress", "true"], timeout=300)
    assert f"resumed from the checkpoint of epoch {from_epoch}" in res.stdout, res.stdout[-3000:]


def momentum_buffers(rank_state: dict) -> list[torch.Tensor]:
    """Each parameter's momentum buffer: its segment of the flat buffer's momentum part (the
    baseline averages the gradients, then steps the flat SGD like every algorithm)."""
    fm = FlatModel(ResNet20(replicas=1), 1)
    return [rank_state["flat"][o:o + k] for o, k in fm.momentum_segments]


# --- the gradient-allreduce baseline ----------------------------------------------------------
@pytest.mark.horovod
def test_gradient_allreduce_resume_restores_the_momentum_and_is_bit_identical(first_runs):
    ref, cut = first_runs / "gar_ref" / "run", first_runs / "gar_cut" / "run"
    first = load_ckpt(cut)
    assert (first["epoch"], first["step"]) == (1, 8)
    # After 8 steps every parameter's momentum buffer is non-zero, so a resume that dropped it
    # would make different updates from step 9 on.
    for r in (0, 1):
        bufs = momentum_buffers(first["ranks"][r])
        assert len(bufs) == len(list(ResNet20(replicas=1).parameters()))
        assert all(b.abs().sum() > 0 for b in bufs)

    resume(GAR, cut, from_epoch=1)
    a, b = load_ckpt(cut), load_ckpt(ref)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 24)
    for r in (0, 1):
        assert torch.equal(a["ranks"][r]["flat"], b["ranks"][r]["flat"]), f"rank {r} weights"
        for x, y in zip(momentum_buffers(a["ranks"][r]), momentum_buffers(b["ranks"][r]),
                        strict=True):
            assert torch.equal(x, y), f"rank {r} momentum"
    assert metric_rows(cut) == metric_rows(ref)
    # The resumed part crosses the lr milestone (epoch 2 of the smoke preset).
    assert [float(r["lr"]) for r in metric_rows(cut)] == pytest.approx([0.1, 0.1, 0.01])
    assert run_status(cut)["status"] == "done"


# --- Algorithm 3 --------------------------------------------------------------------------------
def jsonl(path: Path) -> list[str]:
    return path.read_text().splitlines()


def with_epoch(lines: list[str], epoch: int) -> list[str]:
    return [l for l in lines if json.loads(l)["epoch"] == epoch]


@pytest.mark.horovod
def test_hetero_resume_keeps_each_workers_loop_state_and_rounds_log(first_runs):
    ref, cut = first_runs / "het_ref" / "run", first_runs / "het_cut" / "run"
    first = load_ckpt(cut)
    assert first["epoch"] == 1
    loops = [first["ranks"][r]["loop"] for r in (0, 1)]
    assert loops == [{"step": 4, "rounds_done": 2, "step_in_round": 0, "worker_steps": 10},
                     {"step": 6, "rounds_done": 2, "step_in_round": 0, "worker_steps": 10}]
    ref_rounds = jsonl(ref / "rounds.jsonl")
    assert jsonl(cut / "rounds.jsonl") == with_epoch(ref_rounds, 1)

    # The state a kill between epoch 2's rows and its checkpoint leaves: the rows the run wrote
    # for epoch 2 (the uninterrupted run's, since they are the same run), the last one torn.
    with open(cut / "rounds.jsonl", "a") as f:
        f.write("\n".join(with_epoch(ref_rounds, 2)) + "\n" + '{"round": 5, "ep')
    ref_csv = (ref / "metrics.csv").read_text().splitlines(keepends=True)
    with open(cut / "metrics.csv", "a") as f:
        f.write(ref_csv[2])     # header, epoch 1, epoch 2
    assert [r["epoch"] for r in metric_rows(cut)] == ["1", "2"]

    resume(HETERO, cut, from_epoch=1)
    a, b = load_ckpt(cut), load_ckpt(ref)
    assert a["epoch"] == b["epoch"] == 4
    for r in (0, 1):
        assert torch.equal(a["ranks"][r]["flat"], b["ranks"][r]["flat"]), f"rank {r} weights"
        assert a["ranks"][r]["loop"] == b["ranks"][r]["loop"], f"rank {r} loop state"
    assert [b["ranks"][r]["loop"]["step"] for r in (0, 1)] == [16, 24]
    assert metric_rows(cut) == metric_rows(ref)
    assert [r["epoch"] for r in metric_rows(cut)] == ["1", "2", "3", "4"]
    # Every round once, in order, with each worker's steps: no row of epoch 2 twice, none lost.
    assert jsonl(cut / "rounds.jsonl") == ref_rounds
    assert [json.loads(l)["round"] for l in ref_rounds] == list(range(1, 9))
    assert all(json.loads(l)["steps"] == [2, 3] for l in ref_rounds)
    assert (run_status(cut)["status"], run_status(cut)["epochs"]) == ("done", 4)
