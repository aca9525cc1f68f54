"""Runs several tiny trainings in ONE launch (`horovodrun -np N --gloo` or `torchrun`), each
optionally interrupted right after a given local step, as SIGTERM would interrupt it.

    horovodrun -np 2 --gloo python tests/helpers/stop_worker.py OUT_DIR RUNS_JSON

RUNS_JSON: {"name": {"args": [...train flags...], "stop": STEP or null}, ...}; run `name` lives in
OUT_DIR/<name>/run. A stopped run ends `interrupted` with the checkpoints it wrote, as a killed
run does; `--resume` then continues it. One launch for several runs because starting Horovod and
torch dominates a tiny run on 2 cores.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from prsgd.core import config as config_mod
from prsgd.records import ownership
from prsgd.records.lifecycle import Interrupted
from prsgd.train import run


class StopAfter:
    """Trainer hook: interrupt every rank right after local step `step` (and its rounds)."""

    def __init__(self, step: int):
        self.step = step

    def after_step(self, trainer, step, events):
        if step == self.step:
            raise Interrupted(signal.SIGTERM)


def main(out: str, runs_json: str) -> None:
    for name, spec in json.loads(runs_json).items():
        d = Path(out) / name
        d.mkdir(parents=True, exist_ok=True)
        cfg = config_mod.from_args([*spec["args"], "--out", str(d), "--run-id", "run"])
        try:
            run(cfg, hooks=StopAfter(spec["stop"]) if spec.get("stop") else None)
        except Interrupted:
            pass
        finally:
            ownership.release_all()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
