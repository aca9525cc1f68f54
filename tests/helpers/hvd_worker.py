"""Run the trainer under horovodrun and record, per rank and step, what the tests look at.

    horovodrun -np 2 --gloo python tests/helpers/hvd_worker.py RECORD_PREFIX [train flags...]

Writes RECORD_PREFIX.rank{r}.jsonl (one line per local step: step, averaging events, sha256 of
the rank's parameters+BN statistics, the batch's sample indices) and RECORD_PREFIX.rank{r}.pt
(the final flat state and momentum).
"""
import hashlib
import json
import sys

import torch

from prsgd.core import config

from prsgd import train


class Recorder:
    def __init__(self, prefix):
        self.prefix, self.lines = prefix, []

    def after_step(self, trainer, step, events):
        state = trainer.fm.state.detach().cpu().contiguous()
        self.lines.append({
            "step": step,
            "events": [[e.level, [list(g) for g in e.groups]] for e in events],
            "state_sha": hashlib.sha256(state.numpy().tobytes()).hexdigest(),
            "batch": trainer.batch_index.cpu().tolist(),
        })
        self.trainer = trainer


def main():
    prefix, argv = sys.argv[1], sys.argv[2:]
    rec = Recorder(prefix)
    train.run(config.from_args(argv), hooks=rec)
    t = rec.trainer
    with open(f"{prefix}.rank{t.rank}.jsonl", "w") as f:
        for line in rec.lines:
            f.write(json.dumps(line) + "\n")
    torch.save({"state": t.fm.state.detach().cpu().clone(),
                "params": t.fm.params.detach().cpu().clone(),
                "momentum": t.fm.momentum.detach().cpu().clone()}, f"{prefix}.rank{t.rank}.pt")


if __name__ == "__main__":
    main()
