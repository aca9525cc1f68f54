"""Run directories: `config.json` (resolved config + provenance) and `metrics.csv` (one row per
epoch), written by rank 0 only; and the one loader used by the plot, the notebook and the tests.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

METRIC_COLUMNS = (
    "epoch", "step", "train_seconds", "train_loss", "train_acc", "lr",
    "rounds", "rounds_local", "bytes", "compute_seconds", "comm_seconds",
    "test_loss", "test_acc", "full_train_loss",
    # the family issue: counters of the local level (Hier-AVG) and all workers' local steps
    "bytes_local", "comm_seconds_local", "worker_steps",
)


REPO = Path(__file__).resolve().parents[3]


def portable_path(text: str) -> str:
    """A path as a run record may keep it: relative to the repository (`../shared/...` for the
    folder beside it), `python`/`horovodrun` for the launchers, and other absolute paths by
    their name only, so that committed records hold no path of one machine. `--flag=PATH` too."""
    flag, eq, value = text.partition("=") if text.startswith("--") else ("", "", text)
    if not os.path.isabs(value):
        return text
    path = Path(value)
    if path.parent.name == "bin" and (path.name.startswith("python") or
                                      path.name == "horovodrun"):
        out = "python" if path.name.startswith("python") else "horovodrun"
    else:
        rel = os.path.relpath(path, REPO)
        out = rel if not rel.startswith(os.pardir + os.sep + os.pardir) else path.name
    return flag + eq + out


def portable_command(args) -> str:
    return " ".join(portable_path(str(a)) for a in args)


def new_run_id() -> str:
    return time.strftime("%m%d-%H%M%S-") + secrets.token_hex(2)


def git_info() -> dict:
    if os.environ.get("PRSGD_GIT_COMMIT"):  # a copy of the code without .git (e.g. a GPU host)
        return {"commit": os.environ["PRSGD_GIT_COMMIT"],
                "dirty": os.environ.get("PRSGD_GIT_DIRTY", "0") == "1", "from": "environment"}
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


HOROVOD_KNOBS = ("HOROVOD_CYCLE_TIME", "HOROVOD_FUSION_THRESHOLD", "HOROVOD_CACHE_CAPACITY",
                 "HOROVOD_AUTOTUNE", "HOROVOD_HIERARCHICAL_ALLREDUCE", "HOROVOD_CPU_OPERATIONS",
                 "HOROVOD_GPU_OPERATIONS")


def provenance(*, world_size: int, devices: list[str], dataset) -> dict:
    import torch
    try:
        import horovod
        hvd_version = horovod.__version__
    except ImportError:
        hvd_version = None
    return {
        "git": git_info(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "horovod": hvd_version},
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "world_size": world_size,
        # Horovod's tuning knobs as this run saw them (init_horovod sets the cycle time default).
        "horovod_env": {k: os.environ[k] for k in HOROVOD_KNOBS if k in os.environ},
        "devices": devices,
        "dataset": {"name": dataset.name, "sha256": dataset.checksum,
                    "source": portable_path(str(dataset.source)) if dataset.source else None,
                    "train_size": len(dataset.train_y), "test_size": len(dataset.test_y)},
        "command": portable_command(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "assumptions": {"weight_decay": "1e-4 is our assumption; the paper does not state it"},
    }


@contextlib.contextmanager
def naming(path: Path, remove: bool = False):
    """An OSError inside names `path`: a write that fails on flush or close (a full disk) raises
    one without a file name, which the user would see as "I/O: No space left on device".
    `remove`: delete the half-written `path` (its space may let status.json say `failed`)."""
    try:
        yield
    except OSError as e:
        if remove:
            with contextlib.suppress(OSError):
                path.unlink()
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def write_json_atomic(path: Path, obj) -> None:
    """Strict JSON (a bare NaN/Infinity is refused here, not by a reader later), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False)
    tmp = path.with_name(path.name + ".tmp")
    with naming(tmp, remove=True):
        tmp.write_text(text + "\n")
    os.replace(tmp, path)


def os_error_message(e: OSError) -> str:
    """One line for an I/O failure: the path and what the system said about it."""
    where = e.filename if e.filename is not None else "I/O"
    return f"{where}: {e.strerror or e.__class__.__name__}" + (
        f" (errno {e.errno})" if e.errno else "")


class RecordError(ValueError):
    """A run record (config.json, manifest.json, metrics.csv) that cannot be read; the message
    names the file."""


def read_json(path: Path, what: str = "") -> dict:
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


class MetricsWriter:
    """Appends one row per epoch and flushes it, so a kill loses at most the current epoch."""

    def __init__(self, path: Path, columns=METRIC_COLUMNS):
        self.path, self.columns = path, tuple(columns)
        new = not path.exists() or path.stat().st_size == 0
        self._f = open(path, "a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=self.columns, extrasaction="raise")
        if new:
            with naming(path):
                self._w.writeheader()
                self._f.flush()

    def write(self, row: dict) -> None:
        with naming(self.path):
            self._w.writerow({k: _fmt(row.get(k)) for k in self.columns})
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self):
        self._f.close()


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def read_metrics(path: Path) -> "pandas.DataFrame":
    """metrics.csv as a DataFrame. A last row torn by a kill (a missing field, a truncated
    number) is dropped with a warning naming the file; a torn row before the last one means
    the file was damaged otherwise: RecordError naming the file and the line."""
    import warnings
    import pandas as pd
    lines = path.read_text().splitlines()
    if not lines:
        return pd.DataFrame(columns=METRIC_COLUMNS)
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
    import io
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


def load_run(run_dir) -> tuple[dict, "pandas.DataFrame"]:
    """(config.json as a dict, metrics.csv as a DataFrame) of one run directory."""
    import pandas as pd
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    if not isinstance(cfg.get("config"), dict):
        raise RecordError(f"{run_dir / 'config.json'}: has no \"config\" object; not a prsgd "
                          "run record")
    metrics_path = run_dir / "metrics.csv"
    df = read_metrics(metrics_path) if metrics_path.exists() and metrics_path.stat().st_size \
        else pd.DataFrame(columns=METRIC_COLUMNS)
    return cfg, df


def find_runs(root) -> list[Path]:
    return sorted(p.parent for p in Path(root).rglob("config.json"))


RUN_COLUMNS = ("run_id", "interval", "seed", "workers", "algorithm", "dataset", "total_steps",
               "steps_per_epoch", "status")


def load_sweep(sweep_dir) -> "pandas.DataFrame":
    """Every run of a sweep directory (or of any folder holding run directories) as one long table:
    one row per run and epoch, the columns of metrics.csv plus RUN_COLUMNS. `status` comes from the
    sweep's manifest.json (done, failed, diverged, running, ...), or is "unknown" without one.
    The run configs are in `df.attrs["configs"]` (run id -> config.json as a dict)."""
    import pandas as pd
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep directory")
    manifest_path = sweep_dir / "manifest.json"
    status = {}
    if manifest_path.exists():
        try:
            status = {r["run_id"]: r["status"] for r in read_json(manifest_path).get("runs", [])}
        except (TypeError, KeyError):
            raise RecordError(f"{manifest_path}: its runs list is malformed") from None
    frames, configs = [], {}
    for run_dir in find_runs(sweep_dir):
        meta, df = load_run(run_dir)
        cfg, derived = meta["config"], meta.get("derived", {})
        rid = cfg.get("run_id") or run_dir.name
        configs[rid] = meta
        df = df.copy()
        df.insert(0, "run_id", rid)
        df["interval"] = cfg["interval"]
        df["seed"] = cfg["seed"]
        df["workers"] = derived.get("workers", cfg.get("workers"))
        df["algorithm"] = cfg["algorithm"]
        df["dataset"] = meta.get("provenance", {}).get("dataset", {}).get("name", cfg["dataset"])
        df["total_steps"] = derived.get("total_steps")
        df["steps_per_epoch"] = derived.get("steps_per_epoch")
        df["status"] = status.get(rid, status.get(run_dir.name, "unknown"))
        frames.append(df)
    cols = list(RUN_COLUMNS[:1]) + list(METRIC_COLUMNS) + list(RUN_COLUMNS[1:])
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    out = out.sort_values(["interval", "seed", "epoch"], kind="stable").reset_index(drop=True)
    out.attrs["configs"] = configs
    return out
