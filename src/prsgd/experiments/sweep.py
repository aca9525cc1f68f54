"""The sweep driver: one training run per averaging interval I (and per seed), each a subprocess.

    python scripts/sweep.py --out results/figure3/sweep --np 8 --intervals 1,4,8,16,32 \
        --data ../shared/data/cifar10-jpeg -- --preset paper

Each run is `horovodrun -np N [--gloo] python -m prsgd.train --out SWEEP/runs --run-id ID ...`
(the backend's `command`: `python -m prsgd.train --backend packed --workers N ...` with
`--backend packed`, `torchrun --standalone --nproc-per-node N ...` with `--backend torchdist`). With
`--backend packed --pack`, the unfinished intervals of a seed train together in ONE process
(`--intervals 1,4,8,16,32`: 5 x N replicas; the way to run Figure 3 on one GPU), each still in its
own `runs/<ID>/`. The sweep
directory holds `runs/<ID>/` (the trainer's run directories), `logs/<ID>.{stdout,stderr}` and
`manifest.json`: the sweep's configuration and each run's status (pending, running, done,
failed with its error, diverged, interrupted). Running the same command again skips finished runs,
continues a run from `runs/<ID>/checkpoint.pt` with `--resume` where the trainer left one, and
otherwise restarts it from scratch. A failing run is recorded and the sweep goes on; the exit
status is non-zero at the end when any run failed or diverged, naming them.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prsgd.launch import hosts as hosts_mod
from prsgd.records import ownership
from prsgd.records.results import (RecordError, git_info, portable_command, portable_path, read_json,
                      write_json_atomic)

DEFAULT_INTERVALS = (1, 4, 8, 16, 32)
# Flags the sweep sets itself for every run; passing them as training arguments is refused.
MANAGED_FLAGS = ("--interval", "--intervals", "--seed", "--out", "--run-id", "--resume",
                 "--restart")
# How long a rerun waits for a previous driver's runs to end (they get SIGTERM when it dies).
OWNER_WAIT_S = 60.0
FINAL = ("done", "diverged")          # statuses a rerun of the sweep does not touch
EXIT_DIVERGED = 3                     # prsgd.train's exit code for a diverged run
# The shared JPEG copy next to the repository (or next to the working directory, as make sees it).
SHARED_DATA = (Path(__file__).resolve().parents[3].parent / "shared" / "data" / "cifar10-jpeg",
               Path("..") / "shared" / "data" / "cifar10-jpeg")
EPOCH_LINE = re.compile(r"\[(?P<id>[^\]]+)\] epoch (?P<e>\d+)/(?P<n>\d+) .*?loss (?P<loss>\S+)")
ERROR_LINE = re.compile(r"prsgd\.train: (error|diverged): .*")


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


def train_command(spec: SweepSpec, runs_dir: Path, rid: str, interval: int, seed: int,
                  resume: bool) -> list[str]:
    """The command of one run, as a list of arguments."""
    args = ["-m", "prsgd.train", "--out", str(runs_dir), "--run-id", rid,
            "--interval", str(interval), "--seed", str(seed), *spec.train_args,
            *spec.overrides.get(rid, [])]
    if resume:
        args.append("--resume")
    from prsgd.backends import backend_class
    from prsgd.launch.commands import LaunchError
    try:
        return backend_class(spec.backend).command(spec, args)
    except (ValueError, LaunchError) as e:
        raise SweepError(str(e)) from None


def pack_command(spec: SweepSpec, runs_dir: Path, job: list[tuple[str, int, int]],
                 resume: bool) -> list[str]:
    """One packed process for the runs of `job` (one seed, several intervals); the trainer
    names each run's directory from the `I{interval}-s<seed>` template."""
    from prsgd.backends import backend_class
    seed = job[0][2]
    intervals = ",".join(str(i) for _, i, _ in job)
    return [sys.executable, "-m", "prsgd.train", "--out", str(runs_dir),
            "--run-id", run_id("{interval}", seed), "--intervals", intervals,
            "--seed", str(seed), *spec.train_args, *(["--resume"] if resume else []),
            *backend_class(spec.backend).train_flags(spec.np)]


# --- manifest ------------------------------------------------------------------------------------
class Manifest:
    """manifest.json of a sweep directory: written atomically after every change of status."""

    def __init__(self, sweep_dir: Path, spec: SweepSpec):
        self.path = sweep_dir / "manifest.json"
        self.spec = spec
        self.runs: dict[str, dict] = {}
        if self.path.exists():
            old = read_json(self.path)
            _check_compatible(old.get("spec", {}), spec, self.path)
            try:
                self.runs = {r["run_id"]: r for r in old.get("runs", [])}
            except (TypeError, KeyError):
                raise RecordError(f"{self.path}: its runs list is malformed") from None
            self.created = old.get("created")
        else:
            self.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for rid, interval, seed in spec.run_ids():
            self.runs.setdefault(rid, {"run_id": rid, "interval": interval, "seed": seed,
                                       "status": "pending"})

    def update(self, rid: str, **fields) -> None:
        self.runs[rid].update(fields)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {
            "spec": portable_spec(self.spec), "created": self.created, "git": git_info(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs": [self.runs[k] for k in sorted(self.runs, key=_order(self.runs))],
        })


def _order(runs):
    return lambda k: (runs[k]["interval"], runs[k]["seed"])


def portable_spec(spec: SweepSpec) -> dict:
    """The spec as manifest.json keeps it: paths in the training arguments made portable."""
    d = asdict(spec)
    d["train_args"] = [portable_path(a) for a in d["train_args"]]
    if "hostfile" in d["launch"]:
        d["launch"]["hostfile"] = portable_path(d["launch"]["hostfile"])
    return d


def _check_compatible(old: dict, spec: SweepSpec, path: Path) -> None:
    new = portable_spec(spec)
    for key in SweepSpec.FIXED:
        if key in old and old[key] != new[key]:
            raise SweepError(f"{path} was made with {key}={old[key]!r}, not {new[key]!r}; "
                             "use another --out for a different sweep")


# --- running one run -----------------------------------------------------------------------------
class Progress:
    """A text progress display over runs and epochs, fed by the trainer's per-epoch lines."""

    def __init__(self, total_runs: int, stream=sys.stdout, width: int = 24):
        self.total, self.stream, self.width = total_runs, stream, width
        self.index = 0

    def bar(self, frac: float) -> str:
        n = round(max(0.0, min(1.0, frac)) * self.width)
        return "[" + "#" * n + "." * (self.width - n) + "]"

    def start(self, rid: str, note: str = "") -> None:
        self.index += 1
        self.say(f"run {self.index}/{self.total} {rid}: started{note}")

    def epoch(self, rid: str, e: int, n: int, loss: str) -> None:
        done = (self.index - 1 + e / n) / self.total
        self.say(f"run {self.index}/{self.total} {rid} {self.bar(e / n)} epoch {e}/{n} "
                 f"loss {loss} | sweep {self.bar(done)} {100 * done:3.0f}%")

    def say(self, text: str) -> None:
        print(f"sweep: {text}", file=self.stream, flush=True)


def run_env() -> dict:
    """The runs import the same prsgd as this driver (a worktree's src/ wins over an install)."""
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _pump(pipe, log_path: Path, on_line, tail: collections.deque):
    with open(log_path, "w") as log:
        for line in pipe:
            log.write(line)
            log.flush()
            tail.append(line.rstrip("\n"))
            if on_line:
                on_line(line)


def run_one(cmd: list[str], logs: Path, rid: str, progress: Progress, timeout: float | None,
            log_name: str | None = None):
    """Run one training command, streaming run `rid`'s per-epoch lines into the progress display
    (a packed job's runs move together: one of them is enough). Logs go to
    `logs/<log_name or rid>.{stdout,stderr}`. Returns (return code, last stdout lines, last
    stderr lines)."""
    logs.mkdir(parents=True, exist_ok=True)
    log_name = log_name or rid

    def on_stdout(line: str):
        m = EPOCH_LINE.search(line)
        if m and m["id"] == rid:
            progress.epoch(log_name, int(m["e"]), int(m["n"]), m["loss"])

    out_tail, err_tail = collections.deque(maxlen=200), collections.deque(maxlen=200)
    # A session of its own, so that an interrupt or a timeout ends every rank of the run; and
    # SIGTERM to the launcher when this driver dies, even by SIGKILL (see _die_with_parent).
    with _signals_deferred():   # an interrupt inside Popen would orphan the started ranks
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1, start_new_session=True, env=run_env(),
                                preexec_fn=_die_with_parent(os.getpid()))
    try:
        _raise_pending()
    except KeyboardInterrupt:
        _kill_group(proc)
        raise
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, logs / f"{log_name}.stdout",
                                                  on_stdout, out_tail), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, logs / f"{log_name}.stderr", None,
                                                  err_tail), daemon=True)]
    for t in pumps:
        t.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        rc = None
    except BaseException:
        _kill_group(proc)
        raise
    for t in pumps:
        t.join(timeout=10)
    return rc, list(out_tail), list(err_tail)


def _die_with_parent(parent: int):
    """preexec_fn: the child (horovodrun, or a packed trainer) gets SIGTERM when this driver
    dies, however it dies (Linux PR_SET_PDEATHSIG); horovodrun then ends its ranks, which record
    `interrupted`. Elsewhere the driver's own SIGTERM/SIGINT handling still ends the group."""
    def preexec():
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)   # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:   # the driver died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec if sys.platform.startswith("linux") else None


class _Interrupts:
    deferred = False
    pending = False
    signum = signal.SIGINT


def _interrupt(signum, frame):
    """SIGINT/SIGTERM handler: KeyboardInterrupt now, or right after a deferred section."""
    _Interrupts.signum = signum
    if _Interrupts.deferred:
        _Interrupts.pending = True
    else:
        raise KeyboardInterrupt


class _signals_deferred:
    def __enter__(self):
        _Interrupts.deferred = True

    def __exit__(self, *exc):
        _Interrupts.deferred = False


def _raise_pending():
    if _Interrupts.pending:
        _Interrupts.pending = False
        raise KeyboardInterrupt


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def error_message(rc, out_tail: list[str], err_tail: list[str], timeout) -> str:
    """The trainer's own error line where there is one (horovodrun prefixes rank output),
    followed by the last lines of stderr."""
    if rc is None:
        return f"timed out after {timeout:g} s (--run-timeout)"
    own = [m.group(0) for line in err_tail + out_tail if (m := ERROR_LINE.search(line))]
    last = [line for line in err_tail if line.strip()][-8:]
    head = own[0] if own else f"exit status {rc}"
    return "\n".join([head, *(["--- last lines of stderr:"] + last if last else [])])


# --- the sweep -----------------------------------------------------------------------------------
def run_sweep(sweep_dir, spec: SweepSpec, *, stop_after: int = 0, run_timeout: float | None = None,
              stream=sys.stdout) -> int:
    """Run (or continue) a sweep; returns the exit status (0: every run done)."""
    sweep_dir = Path(sweep_dir)
    runs_dir, logs = sweep_dir / "runs", sweep_dir / "logs"
    try:   # one driver per sweep directory (released when this process ends, however)
        owner = ownership.acquire(sweep_dir, "sweep")
    except ownership.OwnedElsewhere as e:
        raise SweepError(f"--out: {e}") from None
    try:
        return _run_sweep(sweep_dir, spec, runs_dir, logs, stop_after, run_timeout, stream)
    finally:
        owner.release()


def _free(runs_dir: Path, rids: list[str], wait: float) -> None:
    """A run directory is deleted, restarted or resumed only once no process owns it: a run
    of a previous driver (which got SIGTERM when that driver died) is waited for, briefly."""
    for rid in rids:
        info = ownership.wait_until_free(runs_dir / rid, wait)
        if info is not None:
            raise SweepError(f"{runs_dir / rid} is still in use by a live process "
                             f"({ownership.describe(info)}) after {wait:g} s; stop it (kill "
                             "PID) or wait, then run the sweep again")


def _run_sweep(sweep_dir, spec, runs_dir, logs, stop_after, run_timeout, stream) -> int:
    manifest = Manifest(sweep_dir, spec)
    manifest.save()
    todo = [(rid, i, s) for rid, i, s in spec.run_ids()
            if not (manifest.runs[rid]["status"] in FINAL and (runs_dir / rid).is_dir())]
    todo_jobs = jobs(spec, todo)
    progress = Progress(len(todo_jobs), stream)
    skipped = len(spec.run_ids()) - len(todo)
    if skipped:
        progress.say(f"{skipped} finished run(s) skipped")
    ran = 0
    for job in todo_jobs:
        if stop_after and ran >= stop_after:
            progress.say(f"stopping after {ran} run(s) (--stop-after); run again to continue")
            break
        rids = [rid for rid, _, _ in job]
        first_dir = runs_dir / rids[0]
        _free(runs_dir, rids, OWNER_WAIT_S)
        if spec.pack:
            # A packed job resumes only the very pack that wrote the checkpoint (same intervals).
            pack = [i for _, i, _ in job]
            resume = ((first_dir / "checkpoint.pt").exists()
                      and manifest.runs[rids[0]].get("pack") == pack)
            cmd = pack_command(spec, runs_dir, job, resume)
            name = f"s{job[0][2]}-pack"
        else:
            pack = None
            resume = (first_dir / "checkpoint.pt").exists()
            rid, interval, seed = job[0]
            cmd = train_command(spec, runs_dir, rid, interval, seed, resume)
            name = rid
        if not resume:   # unfinished runs without a checkpoint to continue start afresh
            for rid in rids:
                if (runs_dir / rid).exists():
                    shutil.rmtree(runs_dir / rid)
        try:
            for rid in rids:
                manifest.update(rid, status="running", command=portable_command(cmd), error=None,
                                started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), resumed=resume,
                                run_dir=str((runs_dir / rid).relative_to(sweep_dir)),
                                **({"pack": pack} if pack else {}))
            progress.start(name, " (resuming from its checkpoint)" if resume else "")
            t0 = time.time()
            rc, out_tail, err_tail = run_one(cmd, logs, rids[0], progress, run_timeout, name)
        except KeyboardInterrupt:
            for rid in rids:
                manifest.update(rid, status="interrupted", error="interrupted by the user")
            progress.say("interrupted; run the same command again to continue")
            return 128 + int(_Interrupts.signum)   # 130 for SIGINT, 143 for SIGTERM
        fields = {"returncode": rc, "seconds": round(time.time() - t0, 1),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if rc == 0:
            for rid in rids:
                manifest.update(rid, status="done", **fields)
            progress.say(f"{name} done in {fields['seconds']:.0f} s")
        else:
            msg = error_message(rc, out_tail, err_tail, run_timeout)
            diverged = rc == EXIT_DIVERGED or msg.startswith("prsgd.train: diverged")
            for rid, status, error in run_outcomes(rids, diverged, msg):
                manifest.update(rid, status=status, error=error, **fields)
            progress.say(f"{name} {'diverged' if diverged else 'FAILED'}: {msg.splitlines()[0]} "
                         f"(log: {logs / (name + '.stderr')})")
        ran += 1
    bad = [r for r in manifest.runs.values() if r["status"] in ("failed", "diverged")]
    if bad:
        names = ", ".join(f"{r['run_id']} ({r['status']})" for r in bad)
        progress.say(f"{len(bad)} run(s) did not finish: {names}; see {manifest.path}")
        return 1
    return 0


def run_outcomes(rids: list[str], diverged: bool, msg: str) -> list[tuple[str, str, str]]:
    """(run id, status, error) of each run of a job that exited non-zero. In a packed job one
    diverging run stops the others: the trainer names the diverged ones ("of run(s) A, B"); the
    others are `failed` (stopped), so a rerun of the sweep trains them again without it."""
    if not diverged or len(rids) == 1:
        return [(rid, "diverged" if diverged else "failed", msg) for rid in rids]
    m = re.search(r"of run\(s\) ([^:]+):", msg)
    named = {r.strip() for r in m.group(1).split(",")} if m else set(rids)
    return [(rid, "diverged", msg) if rid in named else
            (rid, "failed", f"stopped: a run packed with it diverged ({msg.splitlines()[0]})")
            for rid in rids]


# --- data and command line -----------------------------------------------------------------------
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


def preflight_data(train_args: list[str]) -> None:
    """Load (and cache) the dataset once before any run, so that missing data stops the sweep with
    the loader's message instead of failing every run in turn."""
    from prsgd.core import config as config_mod
    cfg = config_mod.from_args(train_args)
    if cfg.dataset == "synthetic":
        return
    from prsgd.data import dataset as data_mod   # imports torch: only when there is data to check
    data_mod.load(cfg.dataset, cfg.data, cfg.train_subset, cfg.test_subset, cfg.seed)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/sweep.py", description="Run one training run per averaging interval.",
        allow_abbrev=False,
        epilog="Arguments after `--` go to every run (e.g. -- --preset demo --epochs 4).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="the sweep directory (created; reused to resume)")
    p.add_argument("--intervals", type=_int_list, default=list(DEFAULT_INTERVALS),
                   help="averaging intervals I, comma-separated")
    p.add_argument("--seeds", type=_int_list, default=[0], help="seeds, comma-separated")
    p.add_argument("--np", type=int, default=2, help="workers N (Horovod ranks or packed replicas)")
    from prsgd.backends import backend_class, sweepable_backends
    how = {n: f"{backend_class(n).launcher} ranks" if backend_class(n).launcher
           else "N replicas in one process" for n in sweepable_backends()}
    p.add_argument("--backend", choices=sweepable_backends(), default="horovod",
                   help="how a run's workers run: " + ", ".join(f"{n} ({h})"
                                                               for n, h in how.items()))
    p.add_argument("--pack", action="store_true",
                   help="with --backend packed: train all intervals of a seed in one process "
                        "(intervals x np replicas; Figure 3 on one GPU)")
    p.add_argument("--no-gloo", dest="gloo", action="store_false",
                   help="launch horovodrun without --gloo (MPI; NCCL GPU builds)")
    p.add_argument("--launcher", choices=("horovodrun", "mpirun"), default="horovodrun",
                   help="how the horovod backend starts a run's ranks (mpirun: Horovod built "
                        "with MPI, e.g. OpenMPI; see README, MPI and Slurm)")
    p.add_argument("--data", default=None,
                   help="auto, synthetic, a cifar-10-batches-py folder or an ImageFolder tree/zip "
                        "(default: leave the data flags to the training arguments)")
    p.add_argument("--override", action="append", default=[], metavar="RUN_ID=ARGS",
                   help="extra training arguments for one run only, e.g. 'I4-s0=--lr 0.05'")
    p.add_argument("--stop-after", type=int, default=0, help="stop after this many runs (0: all)")
    p.add_argument("--run-timeout", type=float, default=None, help="seconds per run (default: none)")
    p.add_argument("--no-preflight", dest="preflight", action="store_false",
                   help="do not load the dataset once before the first run")
    hosts_mod.add_arguments(p)
    return p


def spec_from_args(args, train_args: list[str]) -> SweepSpec:
    if not args.intervals or any(i <= 0 for i in args.intervals):
        raise SweepError(f"--intervals: every I must be a positive integer (got {args.intervals})")
    if not args.seeds:
        raise SweepError("--seeds: give at least one seed")
    if args.np <= 0:
        raise SweepError(f"--np: must be a positive integer (got {args.np})")
    _refuse_managed(train_args, "")
    from prsgd.backends import backend_class, packing_backend
    if args.pack and not backend_class(args.backend).holds_all_workers:
        raise SweepError(f"--pack: packs runs into one process of the {packing_backend()} "
                         f"backend; add --backend {packing_backend()}")
    if args.pack and args.override:
        raise SweepError("--override: not with --pack (the runs of a pack share one process and "
                         "its arguments); run that interval in a sweep of its own")
    if len(set(args.intervals)) != len(args.intervals):
        raise SweepError(f"--intervals: each interval once (got {args.intervals})")
    if len(set(args.seeds)) != len(args.seeds):
        raise SweepError(f"--seeds: each seed once (got {args.seeds})")
    if args.data is not None:
        train_args = [*data_args(args.data), *train_args]
    try:
        launch = hosts_mod.launch_from_args(args)
    except hosts_mod.HostsError as e:
        raise SweepError(str(e)) from None
    spec = SweepSpec(intervals=args.intervals, seeds=args.seeds, np=args.np, backend=args.backend,
                     gloo=args.gloo, pack=args.pack, train_args=train_args,
                     launcher=args.launcher, launch=launch)
    known = {rid for rid, _, _ in spec.run_ids()}
    for item in args.override:
        rid, sep, extra = item.partition("=")
        if not sep or rid not in known:
            raise SweepError(f"--override: expected RUN_ID=ARGS with RUN_ID one of "
                             f"{', '.join(sorted(known))} (got {item!r})")
        try:
            extra_args = shlex.split(extra)
        except ValueError as e:
            raise SweepError(f"--override {rid}: {e}") from None
        _refuse_managed(extra_args, f"--override {rid}: ")
        spec.overrides[rid] = spec.overrides.get(rid, []) + extra_args
    check_runs(spec)
    return spec


def _refuse_managed(train_args: list[str], where: str) -> None:
    """Parse training arguments with the trainer's own parser (no abbreviations: `--see` is an
    error, not `--seed`) and refuse the flags the sweep sets itself, however they are spelled."""
    from prsgd.core.config import ConfigError, given_flags
    try:
        given = given_flags(train_args)
    except ConfigError as e:
        raise SweepError(f"{where}{e}") from None
    managed = [f for f in MANAGED_FLAGS if f[2:].replace("-", "_") in given]
    if managed:
        raise SweepError(f"{where}{managed[0]}: the sweep sets {', '.join(MANAGED_FLAGS)} "
                         "itself; use --intervals, --seeds, --out (or --override for one run's "
                         "other arguments)")


def check_runs(spec: SweepSpec) -> None:
    """Validate every run's configuration from the common training arguments before the first
    run starts: a bad value there would fail every run. (A run's --override is checked by its
    trainer: that run fails, recorded with the message, and the sweep goes on.)"""
    from prsgd.backends import backend_class
    from prsgd.core.config import ConfigError, from_args
    backend = backend_class(spec.backend)
    world = None if backend.holds_all_workers else spec.np
    for rid, interval, seed in spec.run_ids():
        argv = ["--interval", str(interval), "--seed", str(seed), *spec.train_args,
                *backend.train_flags(spec.np)]
        try:
            from_args(argv).validate(world)
        except ConfigError as e:
            raise SweepError(f"run {rid}: {e}") from None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    # `kill SWEEP_PID` ends the current run's ranks too (they run in a session of their own).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        spec = spec_from_args(args, train_args)
        if spec.launch:
            try:
                hosts_mod.check(spec.launch, spec.np, spec.backend)
            except hosts_mod.HostsError as e:
                raise SweepError(str(e)) from None
        if args.preflight:
            preflight_data(spec.train_args)
        return run_sweep(args.out, spec, stop_after=args.stop_after, run_timeout=args.run_timeout)
    except (SweepError, RecordError) as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the data loader's and the config's own messages
        from prsgd.core.config import ConfigError
        from prsgd.data.dataset import DataError
        if isinstance(e, (ConfigError, DataError)):
            print(f"sweep: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
