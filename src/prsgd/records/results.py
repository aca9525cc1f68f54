"""What a run records about where it ran (provenance, portable paths), and the one loader of run
and sweep directories used by the plots, the notebook and the tests (files: records/rundir.py).
"""
from __future__ import annotations

import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from prsgd.records import rundir
from prsgd.records.rundir import find_runs

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


def os_error_message(e: OSError) -> str:
    """One line for an I/O failure: the path and what the system said about it."""
    where = e.filename if e.filename is not None else "I/O"
    return f"{where}: {e.strerror or e.__class__.__name__}" + (
        f" (errno {e.errno})" if e.errno else "")


def load_run(run_dir) -> tuple[dict, "pandas.DataFrame"]:
    """(config.json as a dict, metrics.csv as a DataFrame) of one run directory."""
    return rundir.read_config(run_dir), rundir.read_run_metrics(run_dir)


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
    status = rundir.sweep_statuses(sweep_dir)
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
    cols = [RUN_COLUMNS[0], "epoch", *RUN_COLUMNS[1:]]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    out = out.sort_values(["interval", "seed", "epoch"], kind="stable").reset_index(drop=True)
    out.attrs["configs"] = configs
    return out
