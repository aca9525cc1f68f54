"""The sweep driver: one training run per averaging interval I (and per seed), each a subprocess.

    python scripts/sweep.py --out results/figure3-8gpu/sweep --np 8 --intervals 1,4,8,16,32 \
        --data ../shared/data/cifar10-jpeg -- --preset paper

Each run is `horovodrun -np N [--gloo] python -m prsgd.train --out SWEEP/runs --run-id ID ...`
(the backend class's `command`: `python -m prsgd.train --backend packed --workers N ...` with
`--backend packed`, `torchrun --standalone --nproc-per-node N ...` with `--backend torchdist`; see
experiments/spec.py). With `--backend packed --pack`, the unfinished intervals of a seed train
together in ONE process (`--intervals 1,4,8,16,32`: 5 x N replicas; the way to run Figure 3 on one
GPU), each still in its own `runs/<ID>/`. The sweep directory holds `runs/<ID>/` (the trainer's
run directories), `logs/<ID>.{stdout,stderr}` and `manifest.json` (experiments/manifest.py).

A run's outcome is what its status.json says (records/lifecycle.py), never its printed output:
running the same command again skips finished runs, continues a run from its checkpoint with
`--resume` where the trainer left one, and otherwise restarts it from scratch. A failing run is
recorded and the sweep goes on; the exit status is non-zero at the end when any run failed or
diverged, naming them. While a run trains the driver prints one line per epoch with the run's and
the whole sweep's elapsed time and ETA.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

from prsgd.core.report import clock
from prsgd.experiments.manifest import Manifest
from prsgd.experiments.spec import (DEFAULT_INTERVALS, SweepError, SweepSpec, check_runs,
                                    data_args, job_command, jobs, managed_flags, refuse_managed)
from prsgd.launch import hosts as hosts_mod
from prsgd.launch.children import Interrupts, run_logged
from prsgd.records import ownership, rundir
from prsgd.records.results import portable_command
from prsgd.records.rundir import RecordError

# How long a rerun waits for a previous driver's runs to end (they get SIGTERM when it dies).
OWNER_WAIT_S = 60.0
FINAL = ("done", "diverged")          # statuses a rerun of the sweep does not touch
EXIT_DIVERGED = 3                     # prsgd.train's exit status for a diverged run
# The trainer's own error line (horovodrun prefixes it), for the message of a run refused before
# it wrote status.json; the outcome itself is never read from the output.
TRAINER_ERROR = re.compile(r"prsgd\.train: error: .*")


class Progress:
    """One line per epoch of the running job (read from its status.json): the run's and the whole
    sweep's share done, elapsed time and ETA. Lines only (no carriage returns), greppable."""

    def __init__(self, total_jobs: int, stream=sys.stdout, width: int = 24):
        self.total, self.stream, self.width = total_jobs, stream, width
        self.index, self.sweep_t0 = 0, time.monotonic()
        self.job_t0, self.shown = self.sweep_t0, None

    def bar(self, frac: float) -> str:
        n = round(max(0.0, min(1.0, frac)) * self.width)
        return "[" + "#" * n + "." * (self.width - n) + "]"

    def start(self, name: str, note: str = "") -> None:
        self.index += 1
        self.job_t0, self.shown = time.monotonic(), None
        self.say(f"run {self.index}/{self.total} {name}: started{note}")

    def epoch(self, name: str, e: int, n: int, first: int = 0) -> None:
        """Epoch `e` of `n` done; `first`: the epoch this job started from (a resume)."""
        if (e, n) == self.shown or n <= 0:
            return
        self.shown = (e, n)
        now = time.monotonic()
        run_s = now - self.job_t0
        frac = e / n
        left = run_s / (e - first) * (n - e) if e > first else None
        done = (self.index - 1 + frac) / self.total
        sweep_s = now - self.sweep_t0
        sweep_left = sweep_s / done * (1 - done) if done > 0 else None
        eta = (lambda s: "?" if s is None else clock(s))
        self.say(f"run {self.index}/{self.total} {name} {self.bar(frac)} epoch {e}/{n} "
                 f"{clock(run_s)} ETA {eta(left)} | sweep {self.bar(done)} {100 * done:3.0f}% "
                 f"{clock(sweep_s)} ETA {eta(sweep_left)}")

    def say(self, text: str) -> None:
        print(f"sweep: {text}", file=self.stream, flush=True)


def run_env() -> dict:
    """The runs import the same prsgd as this driver (a worktree's src/ wins over an install)."""
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_job(cmd: list[str], logs: Path, name: str, first_dir: Path, progress: Progress,
            timeout: float | None):
    """Run one job's command, its output into `logs/<name>.{stdout,stderr}`, reporting its first
    run's epochs from status.json. Returns (return code or None on timeout, last stderr lines)."""
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    first = (rundir.read_status(first_dir) or {}).get("checkpoint_epoch") or 0

    def report():
        st = rundir.read_status(first_dir, since=started)
        if st and st.get("epoch"):
            progress.epoch(name, int(st["epoch"]), int(st.get("epochs") or 0), first)

    rc, err_tail = run_logged(cmd, rundir.log_path(logs, name, "stdout"),
                              rundir.log_path(logs, name, "stderr"), env=run_env(),
                              timeout=timeout, on_tick=report)
    report()   # the last epochs of a short run, between two ticks
    return rc, err_tail


def job_outcomes(runs_dir: Path, rids: list[str], rc, err_tail: list[str], timeout,
                 started: float) -> list[tuple[str, str, str | None]]:
    """(run id, status, error) of each run of a job that ended, from the status.json its process
    wrote (`started`: when the job started). `done` needs exit status 0 as well; a run whose
    status.json is missing (refused before it started) or still `running` (killed) failed."""
    out = []
    for rid in rids:
        st = rundir.read_status(runs_dir / rid, since=started) or _finished(runs_dir / rid, rc)
        status, message = st.get("status"), st.get("message") or None
        if rc is None:
            status, message = "failed", f"timed out after {timeout:g} s (--run-timeout)"
        elif status in ("diverged", "failed", "interrupted") or (status == "done" and rc == 0):
            pass
        elif status is None:   # refused before it started: the trainer's one line says why
            own = [m.group(0) for line in err_tail if (m := TRAINER_ERROR.search(line))]
            status = "failed"
            message = own[0] if own else f"exit status {rc}; no status.json: the run did not start"
        else:
            why = ("killed: its status.json still says running" if status == "running"
                   else f"its status.json says {status}")
            status, message = "failed", f"exit status {rc}; {why}"
        if status != "done":
            last = [line for line in err_tail if line.strip()][-8:]
            message = "\n".join([message or f"exit status {rc}",
                                 *(["--- last lines of stderr:"] + last if last else [])])
        out.append((rid, status, None if status == "done" else message))
    return out


def _finished(run_dir: Path, rc) -> dict:
    """A run found already finished by an earlier attempt (the trainer's --resume of a done or
    diverged run trains nothing, exits 0 or 3 and leaves status.json as it was)."""
    st = rundir.read_status(run_dir) or {}
    return st if (st.get("status"), rc) in (("done", 0), ("diverged", EXIT_DIVERGED)) else {}


# --- the sweep -----------------------------------------------------------------------------------
def run_sweep(sweep_dir, spec: SweepSpec, *, stop_after: int = 0, run_timeout: float | None = None,
              stream=sys.stdout) -> int:
    """Run (or continue) a sweep; returns the exit status (0: every run done)."""
    sweep_dir = Path(sweep_dir)
    try:   # one driver per sweep directory (released when this process ends, however)
        owner = ownership.acquire(sweep_dir, "sweep")
    except ownership.OwnedElsewhere as e:
        raise SweepError(f"--out: {e}") from None
    try:
        return _run_sweep(sweep_dir, spec, stop_after, run_timeout, stream)
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


def _run_sweep(sweep_dir, spec, stop_after, run_timeout, stream) -> int:
    runs_dir, logs = rundir.runs_dir(sweep_dir), rundir.logs_dir(sweep_dir)
    manifest = Manifest(sweep_dir, spec)
    manifest.save()
    todo = [(rid, i, s) for rid, i, s in spec.run_ids()
            if not (manifest.runs[rid]["status"] in FINAL and (runs_dir / rid).is_dir())]
    todo_jobs = jobs(spec, todo)
    progress = Progress(len(todo_jobs), stream)
    skipped = len(spec.run_ids()) - len(todo)
    if skipped:
        progress.say(f"{skipped} finished run(s) skipped")
    for ran, job in enumerate(todo_jobs):
        if stop_after and ran >= stop_after:
            progress.say(f"stopping after {ran} run(s) (--stop-after); run again to continue")
            break
        try:
            _run_job(spec, manifest, job, runs_dir, logs, progress, run_timeout)
        except KeyboardInterrupt:
            for rid, _, _ in job:
                manifest.update(rid, status="interrupted", error="interrupted by the user")
            progress.say("interrupted; run the same command again to continue")
            return 128 + int(Interrupts.signum)   # 130 for SIGINT, 143 for SIGTERM
    progress.say(f"{len(todo_jobs)} job(s) in {clock(time.monotonic() - progress.sweep_t0)}")
    bad = [r for r in manifest.runs.values() if r["status"] in ("failed", "diverged")]
    if bad:
        names = ", ".join(f"{r['run_id']} ({r['status']})" for r in bad)
        progress.say(f"{len(bad)} run(s) did not finish: {names}; see {manifest.path}")
        return 1
    return 0


def _run_job(spec, manifest, job, runs_dir, logs, progress, run_timeout) -> None:
    rids = [rid for rid, _, _ in job]
    first_dir = runs_dir / rids[0]
    _free(runs_dir, rids, OWNER_WAIT_S)
    pack = [i for _, i, _ in job] if spec.pack else None
    # A packed job resumes only the very pack that wrote the checkpoint (same intervals).
    resume = rundir.has_checkpoint(first_dir) and (
        pack is None or manifest.runs[rids[0]].get("pack") == pack)
    cmd = job_command(spec, runs_dir, job, resume)
    name = f"s{job[0][2]}-pack" if pack else rids[0]
    if not resume:   # unfinished runs without a checkpoint to continue start afresh
        for rid in rids:
            if (runs_dir / rid).exists():
                shutil.rmtree(runs_dir / rid)
    for rid in rids:
        manifest.update(rid, status="running", command=portable_command(cmd), error=None,
                        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), resumed=resume,
                        run_dir=str((runs_dir / rid).relative_to(manifest.sweep_dir)),
                        **({"pack": pack} if pack else {}))
    progress.start(name, " (resuming from its checkpoint)" if resume else "")
    t0 = time.time()
    rc, err_tail = run_job(cmd, logs, name, first_dir, progress, run_timeout)
    fields = {"returncode": rc, "seconds": round(time.time() - t0, 1),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    outcomes = job_outcomes(runs_dir, rids, rc, err_tail, run_timeout, started=t0)
    for rid, status, error in outcomes:
        manifest.update(rid, status=status, error=error, **fields)
    if all(status == "done" for _, status, _ in outcomes):
        progress.say(f"{name} done in {clock(fields['seconds'])}")
    else:
        status, error = next((s, e) for _, s, e in outcomes if s != "done")
        progress.say(f"{name} {'diverged' if status == 'diverged' else 'FAILED'}: "
                     f"{error.splitlines()[0]} (log: {rundir.log_path(logs, name, 'stderr')})")


# --- command line --------------------------------------------------------------------------------
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
    try:
        launch = hosts_mod.launch_from_args(args)
    except hosts_mod.HostsError as e:
        raise SweepError(str(e)) from None
    spec = SweepSpec(intervals=args.intervals, seeds=args.seeds, np=args.np, backend=args.backend,
                     gloo=args.gloo, pack=args.pack, train_args=train_args,
                     launcher=args.launcher, launch=launch)
    managed = managed_flags(spec)
    refuse_managed(train_args, managed, "")
    if args.data is not None:
        spec.train_args = [*data_args(args.data), *train_args]
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
        refuse_managed(extra_args, managed, f"--override {rid}: ")
        spec.overrides[rid] = spec.overrides.get(rid, []) + extra_args
    check_runs(spec)
    return spec


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    # `kill SWEEP_PID` ends the current run's ranks too (they run in a session of their own).
    Interrupts.install()
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
