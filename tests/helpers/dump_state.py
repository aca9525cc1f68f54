"""Train with `prsgd.train` and save every worker's params + BN statistics after chosen steps.

    horovodrun -np 2 --gloo python tests/helpers/dump_state.py OUT.pt --steps 1,2,50 -- TRAIN ARGS
    python tests/helpers/dump_state.py OUT.pt --steps 1,2,50 -- --backend packed --workers 2 ...

Writes OUT.pt (packed: one file holding every replica) or OUT.rankR.pt (Horovod rank R), a dict
{step: (workers, P+S) float64 tensor}, laid out as for replicas=1, so the two backends compare
directly. Used by the equivalence tests; not part of the package.
"""
import sys

import torch

from prsgd.core import config as config_mod
from prsgd.train import run


class Dump:
    def __init__(self, steps):
        self.steps, self.saved = set(steps), {}

    def after_step(self, trainer, step, events):
        if step not in self.steps:
            return
        fm, n = trainer.fm, trainer.replicas
        rows = [torch.cat([fm.flat[o:o + k].view(n, -1)[r] for o, k in fm.segments])
                for r in range(n)]
        self.saved[step] = torch.stack(rows).double().cpu()
        trainer.dumped_rank = trainer.rank


def main():
    out, rest = sys.argv[1], sys.argv[2:]
    split = rest.index("--")
    opts, train_args = rest[:split], rest[split + 1:]
    steps = [int(s) for s in opts[opts.index("--steps") + 1].split(",")]
    cfg = config_mod.from_args(train_args)
    dump = Dump(steps)
    run(cfg, hooks=dump)
    if cfg.backend == "horovod":
        import horovod.torch as hvd
        out = out.replace(".pt", f".rank{hvd.rank()}.pt")
    torch.save(dump.saved, out)


if __name__ == "__main__":
    main()
