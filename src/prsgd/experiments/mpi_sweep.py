"""The whole sweep as ONE MPI job: one communicator per interval, the intervals train concurrently.

    mpirun -np 40 python -m prsgd.mpi_sweep --intervals 1,4,8,16,32 --out runs -- --preset paper
    srun --mpi=pmix -n 40 python -m prsgd.mpi_sweep --intervals 1,4,8,16,32 --out runs -- ...

The job's W ranks are split (mpi4py: MPI.COMM_WORLD.Split) into K = len(intervals) consecutive
groups of W/K ranks; group k calls hvd.init(comm=its communicator) and trains interval k as an
ordinary Horovod run of W/K workers, writing OUT/runs/I{interval}-s{seed} exactly as
`horovodrun -np W/K python -m prsgd.train --interval I --run-id I{I}-s{seed}` would (same
directory names as scripts/sweep.py). This is the shape of a cluster allocation: 40 GPUs, five
intervals of 8 workers, one scheduler job. Needs Horovod built with MPI, and mpi4py.

OUT is laid out as scripts/sweep.py lays a sweep directory: OUT/runs/I{I}-s{seed}/ and
OUT/manifest.json (written by world rank 0: running, then done / diverged / failed per run), so
`scripts/plot_figure3.py OUT` and the notebook read it unchanged.
"""
from __future__ import annotations

import argparse
import sys
import traceback

from pathlib import Path

from prsgd.experiments.manifest import Manifest
from prsgd.experiments.spec import SweepError, SweepSpec, refuse_managed, run_id
from prsgd.records import rundir

STATUS = {0: "done", 3: "diverged"}   # prsgd.train's exit codes; any other is "failed"


class MpiSweepError(ValueError):
    pass


def groups(world: int, intervals: list[int]) -> list[list[int]]:
    """World ranks of each interval's group: consecutive blocks (a block stays on one node when
    the launcher fills nodes in order, so NCCL rings stay intra-node where they can)."""
    k = len(intervals)
    if k == 0 or world % k:
        raise MpiSweepError(f"{world} ranks do not split into {k} equal groups (one per interval "
                            f"of {intervals}); launch a multiple of {k} ranks")
    size = world // k
    return [list(range(i * size, (i + 1) * size)) for i in range(k)]


def own_args(interval: int, seed: int, out: str) -> list[str]:
    """The trainer flags mpi_sweep sets for a group (and so refuses in the training arguments)."""
    return ["--out", out, "--run-id", run_id(interval, seed), "--interval", str(interval),
            "--seed", str(seed), "--backend", "horovod"]


def train_args_for(interval: int, seed: int, out: str, train_args: list[str]) -> list[str]:
    own = own_args(interval, seed, out)
    managed = [a for a in own if a.startswith("--")] + ["--intervals", "--resume", "--restart"]
    refuse_managed(train_args, managed, "", error=MpiSweepError)
    return [*train_args, *own]


def parse(argv: list[str]):
    train_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(prog="python -m prsgd.mpi_sweep",
                                description="one MPI job, one communicator per interval")
    p.add_argument("--intervals", required=True,
                   type=lambda s: [int(x) for x in s.split(",") if x.strip()])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the sweep directory (run dirs in OUT/runs)")
    a = p.parse_args(argv)
    if len(set(a.intervals)) != len(a.intervals) or any(i <= 0 for i in a.intervals):
        raise MpiSweepError(f"--intervals: distinct positive integers (got {a.intervals})")
    return a, train_args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from mpi4py import MPI   # initialises MPI (thread level MULTIPLE, as Horovod wants)
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    try:
        a, train_args = parse(argv)
        blocks = groups(world.Get_size(), a.intervals)
        color = next(k for k, b in enumerate(blocks) if rank in b)
        interval = a.intervals[color]
        args = train_args_for(interval, a.seed, str(rundir.runs_dir(a.out)), train_args)
    except MpiSweepError as e:
        if rank == 0:
            print(f"mpi_sweep: error: {e}", file=sys.stderr)
        return 2
    manifest, err = None, None
    if rank == 0:   # the others wait for its verdict: a refusal must not leave them hanging
        try:
            spec = SweepSpec(intervals=a.intervals, seeds=[a.seed], np=len(blocks[0]),
                             train_args=train_args, gloo=False, launcher="mpi_sweep")
            manifest = Manifest(Path(a.out), spec)
            for i in a.intervals:
                manifest.update(run_id(i, a.seed), status="running", ranks=len(blocks[0]))
        except (SweepError, OSError) as e:
            err = str(e)
    err = world.bcast(err, root=0)
    if err:
        if rank == 0:
            print(f"mpi_sweep: error: {err}", file=sys.stderr)
        return 2
    comm = world.Split(color, key=rank)
    rc = _train(args, comm)
    # Every group reports; rank 0 prints the outcome of the whole job.
    outcomes = world.gather((interval, rank, rc), root=0)
    if rank == 0:
        for i in a.intervals:
            codes = sorted({c for j, _, c in outcomes if j == i})
            manifest.update(run_id(i, a.seed), status=STATUS.get(max(codes), "failed"),
                            exit_code=max(codes))
            print(f"mpi_sweep: interval {i}: {len(blocks[0])} ranks, "
                  f"{'done' if codes == [0] else 'exit ' + ','.join(map(str, codes))} -> "
                  f"{rundir.runs_dir(a.out) / run_id(i, a.seed)}", flush=True)
    return max(c for _, _, c in outcomes) if rank == 0 else rc


def _train(args: list[str], comm) -> int:
    """prsgd.train's main() for one group, on its communicator (the same lines and exit codes:
    train.exit_code)."""
    from prsgd.core import config as config_mod
    from prsgd import train
    try:
        train.run(config_mod.from_args(args), comm=comm)
    except BaseException as e:
        code = train.exit_code(e)
        if code is not None:
            return code
        if not isinstance(e, Exception):
            raise
        traceback.print_exc()   # reported through the gather; its group's peers fail too
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
