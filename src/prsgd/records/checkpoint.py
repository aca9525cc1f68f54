"""Runs that survive: checkpoints, exact resume, run status, refusal of a different run.

A run directory holds, besides `config.json` and `metrics.csv`:

- `checkpoint.pt`: the state after the last completed checkpointed epoch, as DINO keeps it: the
  run variables (step, epoch, train_seconds, metric rows so far) and, per rank, a named dict of
  the `state_dict()` of every stateful part (`ranks[r][name]`): `flat` (every worker's flat buffer:
  parameters, BN statistics, momentum; local models differ between averagings, so all N are
  kept), `loop` (the loop's counters), `counters`/`config_counters` (communication counters of
  each run), `algorithm` (each run's algorithm state, e.g. DiLoCo's outer optimizer) and `rng`.
  Restoring calls `load_state_dict` on each part of a fully built trainer. Only tensors, numbers,
  strings, lists and dicts: it loads with `torch.load(weights_only=True)`.
  Written to `checkpoint.pt.tmp`, fsynced, then `os.replace`d: the previous one stays until the
  new one is complete, so a kill at any moment leaves a valid checkpoint (or none).
- `status.json`: `running`, `done`, `diverged`, `interrupted` (SIGTERM/SIGINT) or `failed`, with
  epoch, step and a message. A run whose status is still `running` after its launcher exited was
  killed (SIGKILL, a dead rank, a lost machine): it is resumable like `failed`/`interrupted`.

The data position needs no saving: an epoch's batches are a pure function of (seed, epoch,
worker), so resuming at epoch e replays exactly the batches an uninterrupted run would see. A
run killed mid-epoch resumes from its last checkpoint and redoes that epoch; metric rows after
the checkpoint's epoch are dropped (metrics.csv is rewritten from the checkpoint's rows, and
rounds.jsonl of Algorithm 3 to its rows of the checkpoint's epochs).

Under Horovod rank 0 owns the run directory: it gathers every rank's state to write one file and
scatters it back on resume, so a shared file system is not needed.

A packed sweep (`--intervals`: C runs in one process) has C run directories and ONE checkpoint,
in the first: the C runs share one flat buffer. It holds every run's metric rows and counters;
status.json is written into every run directory, and a resume rewrites every metrics.csv.
"""
from __future__ import annotations

import csv
import contextlib
import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from prsgd.backends.packed import PACKED_RUNS
from prsgd.records import ownership
from prsgd.core.config import RunFinished, resume_differences
from prsgd.core.errors import ConfigError
from prsgd.records.results import MetricsWriter, os_error_message, write_json_atomic

CHECKPOINT = "checkpoint.pt"
STATUS = "status.json"
FORMAT = 2   # 2: per-rank named state dicts (1: attributes of the old Trainer)
ROUNDS = "rounds.jsonl"   # Algorithm 3: each round's steps per worker, appended once per epoch
DIAGNOSTICS = "diagnostics.csv"   # --diagnostics: one row per epoch
# Files a run writes into its directory; `--restart` removes exactly these.
RUN_FILES = ("config.json", "metrics.csv", "metrics.csv.tmp", CHECKPOINT, CHECKPOINT + ".tmp",
             STATUS, STATUS + ".tmp", "config.json.tmp", ROUNDS, ROUNDS + ".tmp", DIAGNOSTICS,
             DIAGNOSTICS + ".tmp")


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived. A BaseException, so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


def effective_config(cfg, workers: int) -> dict:
    """The config as it acts: `workers` resolved to the real N (0 means 'the launcher's')."""
    d = cfg.to_dict()
    d["workers"] = workers
    return d


def read_status(run_dir) -> dict | None:
    try:
        return json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return None


def holds_run(run_dir: Path) -> bool:
    return any((run_dir / f).exists() for f in ("config.json", CHECKPOINT, STATUS)) or (
        (run_dir / "metrics.csv").exists() and (run_dir / "metrics.csv").stat().st_size > 0)


def load_checkpoint(path: Path) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: refuse, never half-trust it
        why = (str(e).splitlines() or [""])[0].split(". ")[0]
        raise ConfigError(f"--resume: {path} is unreadable ({e.__class__.__name__}: {why}); "
                          "pass --restart to start the run over") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ConfigError(f"--resume: {path} is not a prsgd checkpoint of format {FORMAT}; "
                          "pass --restart to start the run over")
    return ck


def checkpoint_rows(ck: dict) -> list[list[dict]]:
    """The metric rows of every run directory of a checkpoint (one list per packed run)."""
    return [ck["rows"], *ck.get("packed_rows", [])]


def keep_rounds_through(path: Path, epoch: int) -> None:
    """Rewrite rounds.jsonl to its rows of epochs <= `epoch` (the checkpoint's): the resumed run
    appends the later epochs again. Rows of a lost epoch, or a line torn by a kill, are dropped."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= epoch:
            keep.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def keep_csv_through(path: Path, epoch: int) -> None:
    """Rewrite a per-epoch CSV (first column `epoch`) to its header and rows of epochs <= `epoch`;
    rows of a lost epoch, or a row torn by a kill, are dropped."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    if not lines:
        return
    width = len(next(csv.reader([lines[0]])))
    keep = [lines[0]]
    for fields, line in zip(csv.reader(lines[1:]), lines[1:]):
        try:
            ok = len(fields) == width and int(fields[0]) <= epoch
        except ValueError:
            ok = False
        if ok:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(keep) + "\n")
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        # i14: torch.save turns a failed write into a RuntimeError; report the I/O error with
        # the file's name (the previous checkpoint.pt stays as it was).
        cause = e if isinstance(e, OSError) else e.__context__
        if not isinstance(cause, OSError):
            raise
        with contextlib.suppress(OSError):   # a half checkpoint on a full disk: give the space
            tmp.unlink()                      # back, so that status.json can still say `failed`
        raise OSError(cause.errno, cause.strerror, str(tmp)) from None
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class ListState:
    """Stateful parts of several packed runs as one part (a list of their state dicts)."""

    def __init__(self, parts):
        self.parts = list(parts)

    def state_dict(self) -> list:
        return [p.state_dict() for p in self.parts]

    def load_state_dict(self, states: list) -> None:
        if len(states) != len(self.parts):
            raise ConfigError(f"--resume: the checkpoint holds {len(states)} runs, not "
                              f"{len(self.parts)}; pass --restart to start over")
        for p, s in zip(self.parts, states):
            p.load_state_dict(s)


class RngState:
    """The RNG streams of this process (CPU, and the training GPU's)."""

    def __init__(self, device: torch.device):
        self.device = device

    def state_dict(self) -> dict:
        return {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                else None}

    def load_state_dict(self, d: dict) -> None:
        torch.set_rng_state(d["cpu"])
        if d.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(d["cuda"], self.device)


class Checkpointer:
    """Checkpoint, resume and status of a run's directories (one per packed run; the first holds
    the checkpoint). `parts`: name -> stateful part of this process (`state_dict` and
    `load_state_dict`). Collective methods (`prepare`, `save`, `end_of_epoch`) must be called by
    every rank in the same order."""

    def __init__(self, *, cfg, comm, runs, parts: dict, loop, workers: int, dataset,
                 num_epochs: int):
        self.cfg, self.comm, self.runs, self.parts, self.loop = cfg, comm, runs, parts, loop
        self.N, self.dataset, self.num_epochs = workers, dataset, num_epochs
        self.is_writer = comm.rank == 0
        self.run_dirs = [Path(r.run_dir) for r in runs]
        self.run_dir = self.run_dirs[0]               # holds the checkpoint
        self.resumed_from: int | None = None
        self.saved_epoch: int | None = None   # epoch of the checkpoint on disk
        self.owners: list = []                # ownership locks of the run dirs (writer only)
        self.resume_changes: dict = {}        # operational fields changed by this --resume

    @property
    def path(self) -> Path:
        return self.run_dir / CHECKPOINT

    # --- opening a run directory ------------------------------------------------------------
    def prepare(self) -> dict | None:
        """Refuse a directory holding another run, clear it on --restart, load it on --resume.
        Rank 0 decides and every rank gets the same answer, so an error stops all ranks alike.
        Returns the checkpoint (restored into the parts already) or None for a fresh start."""
        answer = None
        if self.is_writer:
            try:
                # i14: one live owner per run directory, taken before anything is written.
                self.owners = ownership.acquire_all(self.run_dirs)
                answer = ("ok", self._decide())
            except ownership.OwnedElsewhere as e:
                answer = ("error", f"--out/--run-id: {e}")
            except ConfigError as e:
                answer = ("error", str(e))
            except RunFinished as e:
                answer = ("finished", str(e), e.exit_code)
            except OSError as e:
                answer = ("error", os_error_message(e))
        answer = self.comm.broadcast_object(answer)
        if answer[0] == "error":
            raise ConfigError(answer[1])
        if answer[0] == "finished":
            raise RunFinished(answer[1], answer[2])
        ck = answer[1]
        if ck is not None:
            self._restore(ck)
        return ck

    def _clear(self, files=RUN_FILES) -> None:
        for d in self.run_dirs:
            for f in files:
                (d / f).unlink(missing_ok=True)

    def _decide(self) -> dict | None:
        cfg, d = self.cfg, self.run_dir
        if cfg.restart:
            self._clear()
            return None
        holding = [r for r in self.run_dirs if holds_run(r)]
        if not holding:
            return None  # also with --resume: nothing to resume, a fresh start
        status = (read_status(holding[0]) or {}).get("status", "unknown")
        if not cfg.resume:
            raise ConfigError(f"--out/--run-id: {holding[0]} already holds a run (status "
                              f"{status}); pass --resume to continue it, --restart to replace it, "
                              "or choose another --run-id")
        now = effective_config(cfg, self.N)
        if self.path.exists():
            ck = load_checkpoint(self.path)
            old, sha = json.loads(ck["config"]), ck["dataset_sha256"]
        else:  # killed before its first checkpoint: compare with config.json, start over
            ck = None
            try:
                meta = json.loads((d / "config.json").read_text())
                old = dict(meta["config"], workers=meta["derived"]["workers"])
                sha = meta["provenance"]["dataset"]["sha256"]
            except (OSError, ValueError, KeyError, TypeError):
                raise ConfigError(f"--resume: {d} holds files of a run but no readable "
                                  f"checkpoint, and its config.json is not a readable run "
                                  "record; pass --restart to replace it")
            if PACKED_RUNS in meta["derived"]:   # config.json holds one run of a packed sweep
                old["intervals"] = meta["derived"][PACKED_RUNS]["intervals"]
        # The WHOLE resolved config must match (config.resume_differences); operational
        # fields (progress output) may change and are logged in config.json's `resumes`.
        diffs, self.resume_changes = resume_differences(old, now)
        if sha != self.dataset.checksum:
            diffs.append(f"dataset: sha256 {sha[:12]}... in the run, "
                         f"{self.dataset.checksum[:12]}... now")
        if diffs:
            raise ConfigError(f"--resume: {d} was made with a different configuration: "
                              + "; ".join(diffs) + ". Pass --restart to start it over with the "
                              "new values, or choose another --run-id")
        if status in ("done", "diverged"):   # finished: never trained again by --resume
            raise RunFinished(f"{d} is already {status} (epoch "
                              f"{(read_status(holding[0]) or {}).get('epoch')}); nothing to "
                              "resume. Pass --restart to train it again",
                              0 if status == "done" else 3)
        if ck is None:
            self._clear(("metrics.csv", STATUS, ROUNDS, DIAGNOSTICS))
            return None
        # Metrics: exactly the checkpoint's rows; rows of a lost partial epoch are dropped.
        for run_dir, rows in zip(self.run_dirs, checkpoint_rows(ck)):
            tmp = run_dir / "metrics.csv.tmp"
            tmp.unlink(missing_ok=True)
            w = MetricsWriter(tmp)
            for row in rows:
                w.write(row)
            w.close()
            os.replace(tmp, run_dir / "metrics.csv")
        for run_dir in self.run_dirs:
            keep_rounds_through(run_dir / ROUNDS, ck["epoch"])
            keep_csv_through(run_dir / DIAGNOSTICS, ck["epoch"])
        return ck

    def _restore(self, ck: dict) -> None:
        """Every part loads its own state (the run variables first: `loop` may refine them)."""
        loop = self.loop
        loop.step, loop.epoch, loop.train_seconds = ck["step"], ck["epoch"], ck["train_seconds"]
        mine = ck["ranks"][self.comm.rank]
        missing = sorted(set(self.parts) - set(mine))
        if missing:
            raise ConfigError(f"--resume: {self.path} lacks the state of {', '.join(missing)}; "
                              "pass --restart to start the run over")
        for name, part in self.parts.items():
            part.load_state_dict(mine[name])
        for run, rows in zip(self.runs, checkpoint_rows(ck)):
            run.rows = [dict(r) for r in rows]
        self.resumed_from = self.saved_epoch = ck["epoch"]

    # --- during the run -----------------------------------------------------------------------
    def save(self) -> None:
        """Collective: gather every rank's named state dict to rank 0, which writes the file."""
        local = {name: part.state_dict() for name, part in self.parts.items()}
        ranks = self.comm.allgather_object(local)
        if not self.is_writer:
            return
        loop = self.loop
        ck = {"format": FORMAT, "config": json.dumps(effective_config(self.cfg, self.N)),
              "dataset_sha256": self.dataset.checksum, "epoch": loop.epoch, "step": loop.step,
              "train_seconds": loop.train_seconds, "rows": self.runs[0].rows,
              "packed_rows": [r.rows for r in self.runs[1:]], "ranks": ranks,
              "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        save_atomic(ck, self.path)
        self.saved_epoch = loop.epoch

    def end_of_epoch(self, last: bool) -> None:
        """Called by every rank after the epoch's rows are appended to each run's `rows`."""
        every = self.cfg.checkpoint_every
        if every and (self.loop.epoch % every == 0 or last):
            self.save()
            self.status("running")

    def status(self, status: str, message: str = "", per_run: dict | None = None) -> None:
        """status.json of every run directory; `per_run`: run index -> (status, message) for
        runs whose outcome differs (a packed sweep where some runs diverged)."""
        if not self.is_writer:
            return
        loop = self.loop
        for k, run_dir in enumerate(self.run_dirs):
            st, msg = (per_run or {}).get(k, (status, message))
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / STATUS, {
                "status": st, "message": msg, "run_id": run_dir.name,
                "epoch": loop.epoch, "step": loop.step,
                "epochs": self.num_epochs,   # Algorithm 3: epochs of shared rounds
                "checkpoint_epoch": self.saved_epoch,
                "resumed_from_epoch": self.resumed_from, "pid": os.getpid(),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    @contextmanager
    def guard(self, diverged_type):
        """Around the training loop: SIGTERM/SIGINT raise `Interrupted`; the outcome is recorded
        in each run's status.json (done, diverged, interrupted, failed) and the exception goes
        on. A diverged exception's `runs` (indices) name the packed runs that diverged; the
        others stopped with them and are `failed`, saying why."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum, frame):
            raise Interrupted(signum)

        for s in previous:
            signal.signal(s, on_signal)
        self.status("running")
        try:
            yield
        except diverged_type as e:
            bad = getattr(e, "runs", None) or range(len(self.run_dirs))
            others = {k: ("failed", f"stopped: a run packed with it diverged ({e})")
                      for k in range(len(self.run_dirs)) if k not in bad}
            self._last_status("diverged", str(e), per_run=others)
            raise
        except Interrupted as e:
            self._last_status("interrupted", f"{e}; {self._where()}")
            raise
        except BaseException as e:
            if peer_stopped(e, self.loop.last_step_at):   # a peer's SIGTERM/SIGINT, seen here
                self._last_status("interrupted", f"a peer rank stopped ({e.__class__.__name__})"
                                  f"; {self._where()}")
                raise Interrupted(signal.SIGTERM) from e
            self._last_status("failed", f"{e.__class__.__name__}: {e}")
            raise
        else:
            self.status("done")
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            for owner in self.owners:
                owner.release()

    def _where(self) -> str:
        return ("no checkpoint yet: --resume starts it over" if self.saved_epoch is None
                else f"--resume continues from the checkpoint of epoch {self.saved_epoch}")

    def _last_status(self, status: str, message: str, per_run: dict | None = None) -> None:
        """Record how the run ended where the disk still allows it: an I/O failure must not
        hide the error that ended the run (a read-only run dir cannot take status.json)."""
        try:
            self.status(status, message, per_run)
        except OSError:
            pass


def peer_stopped(e: BaseException, last_step_at: float = 0.0) -> bool:
    """Horovod's error on the ranks left when a peer rank exits (a signal to that rank, or
    horovodrun ending the job): the job was stopped, not broken. The error carries no cause, so
    the wait tells the two apart: a peer that exited breaks the collective at once, while a peer
    or link that stopped answering (a cut cable, a hung node) ends it only after Gloo's timeout
    (HOROVOD_GLOO_TIMEOUT_SECONDS, set by horovodrun; 30 s by default): that is a failure."""
    if e.__class__.__name__ != "HorovodInternalError":
        return False
    try:
        timeout = float(os.environ.get("HOROVOD_GLOO_TIMEOUT_SECONDS", 30))
    except ValueError:
        timeout = 30.0
    waited = time.monotonic() - last_step_at if last_step_at else 0.0
    return waited < 0.9 * timeout
