"""Algorithm 1 with its rounds made by the compressed round with the IDENTITY compressor: the code
path every compressor takes (deltas from the reference, exchanged, decoded, added back), which
`--compressor none` does not take (it is Algorithm 1's own round). tests/integration/
test_compressed.py compares it with Algorithm 1.

    horovodrun -np 2 --gloo python tests/helpers/compressed_worker.py [train flags...]

trains --run-id alg1 (Algorithm 1) and then --run-id identity (the identity round) in the same
processes.
"""
import sys
from pathlib import Path

from prsgd import train
from prsgd.algorithms.compressed import CompressedRound
from prsgd.compress import make_compressor
from prsgd.core import config
from prsgd.core.build import build
from prsgd.core.divergence import Diverged
from prsgd.core.loop import Trainer


def identity_round(cfg) -> Path | None:
    """Train `cfg` (Algorithm 1) with the identity compressor's round in place of the average."""
    trainer = Trainer(parts=build(cfg))
    algo = trainer.algorithm
    algo.compressed = CompressedRound(make_compressor("none"), True, len(algo.local_workers))
    algo.compressed.start(trainer.fm)
    try:
        with trainer.lifecycle.guard(Diverged):
            trainer.train()
    finally:
        trainer.close()
    return trainer.run_dir if trainer.is_writer else None


def main():
    argv = sys.argv[1:]
    train.run(config.from_args([*argv, "--run-id", "alg1"]))
    identity_round(config.from_args([*argv, "--run-id", "identity"]))


if __name__ == "__main__":
    main()
