"""What a sweep runs and the command line of each of its runs.

A sweep is one training run per (interval, seed): `horovodrun -np N [--gloo] python -m prsgd.train
...`, `mpirun ... python -m prsgd.train ...`, or one process of the packed backend (`--pack`: the
unfinished intervals of a seed together). The flags the driver sets itself (`driver_flags`) are
the sweep's to manage: `managed_flags` reads them off the very commands the driver builds, and
`refuse_managed` refuses each of them in the training arguments and in every `--override`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


DEFAULT_INTERVALS = (1, 4, 8, 16, 32)
# The driver decides between continuing a run and starting it over; --restart is --resume's
# counterpart, managed with it although the driver never passes it.
COUNTERPARTS = ("--restart",)
# The shared JPEG copy next to the repository (or next to the working directory, as make sees it).
SHARED_DATA = (Path(__file__).resolve().parents[3].parent / "shared" / "data" / "cifar10-jpeg",
               Path("..") / "shared" / "data" / "cifar10-jpeg")


class SweepError(ValueError):
    """Bad sweep arguments or a manifest that does not match them; the message says which."""


@dataclass
class SweepSpec:
    """What a sweep runs. Stored in manifest.json; a rerun must agree on everything but the list
    of intervals and seeds (which may grow)."""
    intervals: list[int] = field(default_factory=lambda: list(DEFAULT_INTERVALS))
    seeds: list[int] = field(default_factory=lambda: [0])
    np: int = 2
    backend: str = "horovod"          # horovod: horovodrun -np N; packed: one process, N replicas
    gloo: bool = True                 # horovodrun --gloo (CPU boxes); off for MPI/NCCL builds
    pack: bool = False                # packed backend: a seed's intervals in one process
    train_args: list[str] = field(default_factory=list)
    overrides: dict[str, list[str]] = field(default_factory=dict)   # run id -> extra arguments
    launcher: str = "horovodrun"      # horovod backend: horovodrun, or mpirun (Horovod with MPI)
    launch: dict = field(default_factory=dict)   # hosts: horovodrun -H/--hostfile/... (hosts.py)

    FIXED = ("np", "backend", "gloo", "train_args", "pack")

    def run_ids(self) -> list[tuple[str, int, int]]:
        return [(run_id(i, s), i, s) for i in self.intervals for s in self.seeds]


def run_id(interval, seed: int) -> str:
    return f"I{interval}-s{seed}"


def jobs(spec: SweepSpec, todo: list[tuple[str, int, int]]) -> list[list[tuple[str, int, int]]]:
    """The processes to launch, each a list of runs: one run each, or with `pack` one per seed
    holding all of that seed's unfinished intervals."""
    if not spec.pack:
        return [[run] for run in todo]
    by_seed: dict[int, list] = {}
    for run in todo:
        by_seed.setdefault(run[2], []).append(run)
    return list(by_seed.values())


def driver_flags(spec: SweepSpec, runs_dir: Path, job: list[tuple[str, int, int]],
                 resume: bool) -> list[str]:
    """The trainer flags the driver sets for a job. A packed job names each run's directory from
    the `I{interval}-s<seed>` template."""
    seed = job[0][2]
    if len(job) > 1 or spec.pack:
        which = ["--run-id", run_id("{interval}", seed),
                 "--intervals", ",".join(str(i) for _, i, _ in job)]
    else:
        which = ["--run-id", job[0][0], "--interval", str(job[0][1])]
    return ["--out", str(runs_dir), *which, "--seed", str(seed), "--backend", spec.backend,
            "--workers", str(spec.np), *(["--resume"] if resume else [])]


def trainer_args(spec: SweepSpec, runs_dir: Path, job, resume: bool) -> list[str]:
    """Everything after `python -m prsgd.train` for a job: the driver's flags, the training
    arguments, the run's --override (a pack takes none)."""
    extra = [] if spec.pack else spec.overrides.get(job[0][0], [])
    return [*driver_flags(spec, runs_dir, job, resume), *spec.train_args, *extra]


def job_command(spec: SweepSpec, runs_dir: Path, job, resume: bool) -> list[str]:
    """The command line of a job, as a list of arguments."""
    args = ["-m", "prsgd.train", *trainer_args(spec, runs_dir, job, resume)]
    from prsgd.backends import backend_class
    from prsgd.launch.commands import LaunchError
    try:   # each backend class says how its ranks are started
        return backend_class(spec.backend).command(spec, args)
    except (ValueError, LaunchError) as e:
        raise SweepError(str(e)) from None


def managed_flags(spec: SweepSpec) -> list[str]:
    """The flags the driver sets, read off the commands it builds (a single run's and a pack's,
    resuming), with their counterparts."""
    single = [("I1-s0", 1, 0)]
    pair = [("I1-s0", 1, 0), ("I2-s0", 2, 0)]
    flags = [a for job in (single, pair)
             for a in driver_flags(spec, Path("."), job, resume=True) if a.startswith("--")]
    return list(dict.fromkeys([*flags, *COUNTERPARTS]))


def refuse_managed(args: list[str], managed: list[str], where: str, error=SweepError) -> None:
    """Parse training arguments with the trainer's own parser (no abbreviations: `--see` is an
    error, not `--seed`) and refuse any flag of `managed`, however it is spelled."""
    from prsgd.core.config import ConfigError, given_flags
    try:
        given = given_flags(args)
    except ConfigError as e:
        raise error(f"{where}{e}") from None
    found = [f for f in managed if f[2:].replace("-", "_") in given]
    if found:
        raise error(f"{where}{found[0]}: the sweep sets {', '.join(managed)} itself; use its "
                    "own options (--intervals, --seeds, --np, --backend, --out) instead, and "
                    "--override for one run's other arguments")


def check_runs(spec: SweepSpec) -> None:
    """Validate every job's configuration from the driver's flags and the common training
    arguments before the first run starts: a bad value there would fail every run. (A run's
    --override is checked by its trainer: that run fails, recorded with the message, and the
    sweep goes on; what could contradict the sweep's backend or launcher, --backend and
    --workers, is a managed flag and refused in an override up front.)"""
    from prsgd.backends import backend_class
    from prsgd.core.config import ConfigError, from_args
    world = None if backend_class(spec.backend).holds_all_workers else spec.np
    for job in jobs(spec, spec.run_ids()):
        name = job[0][0] if len(job) == 1 else f"pack of seed {job[0][2]}"
        argv = [*driver_flags(spec, Path("."), job, resume=False), *spec.train_args]
        try:
            from_args(argv).validate(world)
        except ConfigError as e:
            raise SweepError(f"run {name}: {e}") from None


def data_args(data: str) -> list[str]:
    """Training arguments for a data source: `auto` takes the shared JPEG copy where it exists,
    else the official CIFAR-10 (downloaded by the trainer where the network allows)."""
    if data in ("", "auto"):
        for shared in SHARED_DATA:
            if (shared / "train.zip").exists() or (shared / "train").is_dir():
                return ["--dataset", "imagefolder", "--data", str(shared.resolve())]
        return ["--dataset", "cifar10"]
    if data == "synthetic":
        return ["--dataset", "synthetic"]
    p = Path(data)
    if not p.exists():
        raise SweepError(f"--data: {data} does not exist (expected a cifar-10-batches-py folder, an "
                         "ImageFolder tree or zip, 'synthetic' or 'auto')")
    if (p / "data_batch_1").exists() or (p / "cifar-10-batches-py").is_dir():
        return ["--dataset", "cifar10", "--data", str(p)]
    return ["--dataset", "imagefolder", "--data", str(p)]
