"""The run directory and the sweep directory: every file name in them, their readers and writers,
and the one atomic write (tmp file, then rename) they all go through.

A run directory (`OUT/RUN_ID/`, written by rank 0 only):

- `config.json`: the resolved config, derived values, provenance, Corollary 1, resumes;
- `metrics.csv`: one row per epoch, its columns those of the first row written (the trainer's
  row, records/recorder.py: a new metric is one new key there);
- `status.json`: running, done, diverged, interrupted or failed, with epoch, step and a message;
- `checkpoint.pt`: the state of the last checkpointed epoch (records/state.py);
- `rounds.jsonl` (Algorithm 3): each round's steps per worker, appended once per epoch;
- `diagnostics.csv` (`--diagnostics`): one row per epoch;
- `.owner`: the owner lock (records/ownership.py).

A sweep directory: `manifest.json`, `runs/<RUN_ID>/` (run directories) and
`logs/<NAME>.{stdout,stderr}`.

No module outside records/ spells one of these names.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

CONFIG = "config.json"
METRICS = "metrics.csv"
STATUS = "status.json"
CHECKPOINT = "checkpoint.pt"
ROUNDS = "rounds.jsonl"
DIAGNOSTICS = "diagnostics.csv"
OWNER = ".owner"
MANIFEST = "manifest.json"
RUNS = "runs"
LOGS = "logs"
TMP = ".tmp"

# Files a run writes into its directory; `--restart` removes exactly these (and their tmp files).
RUN_FILES = tuple(f + t for f in (CONFIG, METRICS, CHECKPOINT, STATUS, ROUNDS, DIAGNOSTICS)
                  for t in ("", TMP))


class RecordError(ValueError):
    """A run record (config.json, manifest.json, metrics.csv) that cannot be read; the message
    names the file."""


# --- the one atomic write -------------------------------------------------------------------
def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + TMP)


def fsync_dir(path: Path) -> None:
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


@contextmanager
def atomic_open(path, mode: str = "w", *, durable: bool = False, **open_kw):
    """Write `path` through `path.tmp`, renamed over `path` only once complete: a kill at any
    moment leaves the previous file or the new one, never half of one. `durable`: fsync the
    file and its directory too (the checkpoint). On an error the tmp file is removed (a half
    file on a full disk gives its space back, so that status.json can still say `failed`)."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, mode, **open_kw) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename is None:
            # a write failing on flush or close (a full disk) names no file: name it
            raise OSError(e.errno, e.strerror, str(tmp)) from None
        raise
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path, obj) -> None:
    """Strict JSON (a bare NaN/Infinity is refused here, not by a reader later), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")


def read_json(path, what: str = "") -> dict:
    """A JSON record as a dict, or RecordError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except OSError as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:   # also UnicodeDecodeError
        raise RecordError(f"{path}: not valid JSON ({e}){what}") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{path}: expected a JSON object, found {type(obj).__name__}{what}")
    return obj


# --- config.json ------------------------------------------------------------------------------
def config_path(run_dir) -> Path:
    return Path(run_dir) / CONFIG


def has_config(run_dir) -> bool:
    return config_path(run_dir).exists()


def read_config(run_dir) -> dict:
    """config.json of a run directory; RecordError when it is missing, unreadable or not a run
    record (no "config" object)."""
    path = config_path(run_dir)
    meta = read_json(path)
    if not isinstance(meta.get("config"), dict):
        raise RecordError(f"{path}: has no \"config\" object; not a prsgd run record")
    return meta


def write_config(run_dir, meta: dict) -> None:
    write_json_atomic(config_path(run_dir), meta)


def find_runs(root) -> list[Path]:
    """Every run directory under `root` (a folder holding config.json)."""
    return sorted(p.parent for p in Path(root).rglob(CONFIG))


# --- status.json ------------------------------------------------------------------------------
def read_status(run_dir, since: float | None = None) -> dict | None:
    """status.json as a dict, or None when there is none (or it is unreadable); `since` (a
    time.time()): None too when it was last written before then (by an earlier attempt)."""
    path = Path(run_dir) / STATUS
    try:
        if since is not None and path.stat().st_mtime < since:
            return None
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def write_status(run_dir, status: dict) -> None:
    write_json_atomic(Path(run_dir) / STATUS, status)


# --- metrics.csv and diagnostics.csv ----------------------------------------------------------
def metrics_path(run_dir) -> Path:
    return Path(run_dir) / METRICS


def diagnostics_path(run_dir) -> Path:
    return Path(run_dir) / DIAGNOSTICS


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


# metrics.csv columns added after runs were committed (results/); see MetricsWriter
LATER_COLUMNS = ("comm_seconds_min", "comm_seconds_max")


class MetricsWriter:
    """Appends one row per epoch and flushes it, so a kill loses at most the current epoch. The
    columns are the keys of the first row (or the header of the file it appends to); a later row
    with another key is an error, not a silently dropped value."""

    def __init__(self, path: Path, columns=None):
        self.path = Path(path)
        self.columns = tuple(columns) if columns is not None else _header(self.path)
        # A file written before a column was added keeps its layout when a run resumes into it.
        self.dropped = LATER_COLUMNS if self.columns is not None else ()
        self._f = open(self.path, "a", newline="")
        self._w = None

    def write(self, row: dict) -> None:
        try:
            self._write(row)
        except OSError as e:
            if e.filename is None:     # a full disk on flush names no file: name it
                raise OSError(e.errno, e.strerror, str(self.path)) from None
            raise

    def _write(self, row: dict) -> None:
        if self._w is None:
            new = self.columns is None
            self.columns = self.columns or tuple(row)
            self._w = csv.DictWriter(self._f, fieldnames=self.columns, extrasaction="raise")
            if new or self._f.tell() == 0:
                self._w.writeheader()
        unknown = [k for k in row if k not in self.columns and k not in self.dropped]
        if unknown:
            raise ValueError(f"{self.path}: a row with columns the file does not have: {unknown}")
        self._w.writerow({k: _fmt(row.get(k)) for k in self.columns})
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self):
        try:
            self._f.close()
        except OSError as e:   # the last buffered bytes failing on a full disk: name the file
            raise OSError(e.errno, e.strerror, str(self.path)) if e.filename is None else e


def _header(path: Path) -> tuple | None:
    try:
        with open(path, newline="") as f:
            first = f.readline()
    except OSError:
        return None
    return tuple(next(csv.reader([first]))) if first.strip() else None


def rewrite_metrics(run_dir, rows: list[dict]) -> None:
    """metrics.csv holding exactly `rows` (a resume: the checkpoint's rows), atomically."""
    path = metrics_path(run_dir)
    columns = _header(path) or (tuple(rows[0]) if rows else None)
    with atomic_open(path, newline="") as f:
        if columns:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="raise")
            w.writeheader()
            for row in rows:
                w.writerow({k: _fmt(row.get(k)) for k in columns})


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
    write_text_atomic(path, "\n".join(keep) + "\n")


def read_metrics(path: Path) -> "pandas.DataFrame":
    """metrics.csv as a DataFrame. A last row torn by a kill (a missing field, a truncated
    number) is dropped with a warning naming the file; a torn row before the last one means
    the file was damaged otherwise: RecordError naming the file and the line."""
    import warnings
    import pandas as pd
    lines = path.read_text().splitlines()
    if not lines:
        return pd.DataFrame()
    header = next(csv.reader([lines[0]]))
    rows = list(csv.reader(lines[1:]))
    bad = [i for i, r in enumerate(rows) if not _whole_row(r, header)]

    def what(row):
        return (f"{len(row)} of {len(header)} fields" if len(row) != len(header)
                else "a field that is not a number")

    if bad and bad[0] < len(rows) - 1:
        raise RecordError(f"{path}: line {bad[0] + 2} is torn or malformed ({what(rows[bad[0]])})"
                          "; the file is damaged")
    if bad:
        warnings.warn(f"{path}: its last line is torn ({what(rows[-1])}; a run killed while "
                      "writing it?); that row is dropped", stacklevel=2)
        lines = lines[:-1]
    return pd.read_csv(io.StringIO("\n".join(lines) + "\n"))


def _whole_row(fields: list[str], header: list[str]) -> bool:
    """A complete metrics row: every column, an integer epoch and step, numbers elsewhere; the
    float columns were written with repr(), so a truncated '0.12' still parses but a row cut
    mid-field loses its later columns (and '1e-' or '0.1.' does not parse)."""
    if len(fields) != len(header):
        return False
    try:
        for name, v in zip(header, fields):
            if name in ("epoch", "step"):
                int(v)
            elif v != "":
                float(v)
    except ValueError:
        return False
    return True


def read_run_metrics(run_dir) -> "pandas.DataFrame":
    """metrics.csv of a run directory; an empty frame when it has none (yet)."""
    import pandas as pd
    path = metrics_path(run_dir)
    if path.exists() and path.stat().st_size:
        return read_metrics(path)
    return pd.DataFrame(columns=["epoch", "step"])


def read_diagnostics(run_dir) -> "pandas.DataFrame":
    import pandas as pd
    path = diagnostics_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no {DIAGNOSTICS} (was the run made with "
                                "--diagnostics?)")
    return pd.read_csv(path)


# --- rounds.jsonl (Algorithm 3) ---------------------------------------------------------------
def append_rounds(run_dir, rows: list[dict]) -> None:
    with open(Path(run_dir) / ROUNDS, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def keep_rounds_through(run_dir, epoch: int) -> None:
    """Rewrite rounds.jsonl to its rows of epochs <= `epoch` (the checkpoint's): the resumed run
    appends the later epochs again. Rows of a lost epoch, or a line torn by a kill, are dropped."""
    path = Path(run_dir) / ROUNDS
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
    write_text_atomic(path, "".join(keep))


# --- the run directory as a whole -------------------------------------------------------------
def checkpoint_path(run_dir) -> Path:
    return Path(run_dir) / CHECKPOINT


def has_checkpoint(run_dir) -> bool:
    return checkpoint_path(run_dir).exists()


def holds_run(run_dir: Path) -> bool:
    run_dir = Path(run_dir)
    metrics = metrics_path(run_dir)
    return any((run_dir / f).exists() for f in (CONFIG, CHECKPOINT, STATUS)) or (
        metrics.exists() and metrics.stat().st_size > 0)


def clear_run(run_dir, files=RUN_FILES) -> None:
    for f in files:
        (Path(run_dir) / f).unlink(missing_ok=True)


def clear_progress(run_dir) -> None:
    """A run killed before its first checkpoint starts over: drop what it recorded so far."""
    clear_run(run_dir, (METRICS, STATUS, ROUNDS, DIAGNOSTICS))


# --- the sweep directory ----------------------------------------------------------------------
def manifest_path(sweep_dir) -> Path:
    return Path(sweep_dir) / MANIFEST


def read_manifest(sweep_dir) -> dict | None:
    """manifest.json of a sweep directory, None without one; RecordError when unreadable."""
    path = manifest_path(sweep_dir)
    return read_json(path) if path.exists() else None


def write_manifest(sweep_dir, manifest: dict) -> None:
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest_path(sweep_dir), manifest)


def manifest_runs(manifest: dict, path) -> list[dict]:
    runs = manifest.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) and "run_id" in r
                                             for r in runs):
        raise RecordError(f"{path}: its runs list is malformed")
    return runs


def sweep_statuses(sweep_dir) -> dict[str, str]:
    """run id -> status of every run in a sweep's manifest ({} without a manifest)."""
    manifest = read_manifest(sweep_dir)
    if manifest is None:
        return {}
    try:
        return {r["run_id"]: r["status"] for r in manifest_runs(manifest, manifest_path(sweep_dir))}
    except KeyError:
        raise RecordError(f"{manifest_path(sweep_dir)}: its runs list is malformed") from None


def runs_dir(sweep_dir) -> Path:
    return Path(sweep_dir) / RUNS


def logs_dir(sweep_dir) -> Path:
    return Path(sweep_dir) / LOGS


def log_path(logs: Path, name: str, stream: str) -> Path:
    """logs/<name>.stdout or .stderr."""
    return Path(logs) / f"{name}.{stream}"
