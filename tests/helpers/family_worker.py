"""Runs several tiny trainings in ONE Horovod launch and records, per rank and per local step,
which averaging levels happened and a digest of the weights, so tests can compare ranks and runs.

    horovodrun -np 4 --gloo python tests/helpers/family_worker.py OUT_DIR RUNS_JSON

RUNS_JSON: {"name": ["--algorithm", "hier", ...], ...}. For each run this writes
OUT_DIR/<name>/rank<r>.jsonl (one line per step: step, levels, params and state digests) and
OUT_DIR/<name>/rank<r>.final.pt (the final flat state; .early.pt after step 1), and the run
directory OUT_DIR/<name>/run.
One launch for many runs because starting Horovod and torch dominates a tiny run on 2 cores.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from prsgd.core import config as config_mod
from prsgd.backends.horovod import init_horovod
from prsgd.core.loop import Trainer


# Tiny ResNet20 runs on batches of 4 are chaotic: rounding differences of 1e-7 grow ~100x per
# step, so algorithms equal only up to rounding are compared on this early snapshot.
EARLY_STEP = 1


def digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class Recorder:
    """`after_step` hook: one JSON line per local step of this rank."""

    def __init__(self, path: Path):
        self.path, self.f = path, open(path, "w")

    def after_step(self, trainer, step, events):
        fm = trainer.fm
        self.f.write(json.dumps({
            "step": step, "levels": [e.level for e in events],
            "groups": [list(e.group_of(trainer.rank)) for e in events],
            "params": digest(fm.params), "state": digest(fm.state)}) + "\n")
        if step == EARLY_STEP:
            torch.save(fm.state.detach().cpu().clone(), self.path.with_suffix(".early.pt"))


def main(out: str, runs_json: str) -> None:
    # Dynamic process sets from the start: Horovod is initialised once per process, and a later
    # Hier-AVG run in this process needs them.
    hvd = init_horovod(dynamic_process_sets=True)
    runs = json.loads(runs_json)
    for name, args in runs.items():
        d = Path(out) / name
        d.mkdir(parents=True, exist_ok=True)
        cfg = config_mod.from_args([*args, "--out", str(d), "--run-id", "run", "--progress",
                                    "false"])
        rec = Recorder(d / f"rank{hvd.rank()}.jsonl")
        trainer = Trainer(cfg, rec)
        trainer.train()
        rec.f.close()
        torch.save(trainer.fm.state.detach().cpu().clone(), d / f"rank{hvd.rank()}.final.pt")
        hvd.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
