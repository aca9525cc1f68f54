"""What to do with a run directory that already holds files: refuse it, clear it (`--restart`), or
continue it from its checkpoint (`--resume`). Decided by rank 0 alone (records/checkpoint.py
broadcasts the answer).

A `--resume` must match the WHOLE resolved config (config.resume_differences; operational fields
may change and are logged in config.json's `resumes`) and the dataset's checksum. The data
position needs no saving: an epoch's batches are a pure function of (seed, epoch, worker), so
resuming at epoch e replays exactly the batches an uninterrupted run would see. A run killed
mid-epoch resumes from its last checkpoint and redoes that epoch; its records after the
checkpoint's epoch are dropped (metrics.csv is rewritten from the checkpoint's rows, rounds.jsonl
and diagnostics.csv to their rows of the checkpoint's epochs). A run whose status.json still says
`running` after its launcher exited was killed: it is resumable like `failed`/`interrupted`.
"""
from __future__ import annotations

from pathlib import Path

from prsgd.backends.packed import PACKED_RUNS
from prsgd.core.config import RunFinished, resume_differences
from prsgd.core.errors import ConfigError
from prsgd.records import rundir
from prsgd.records.state import checkpoint_rows, effective_config, load_checkpoint


def open_run_dirs(cfg, run_dirs: list[Path], workers: int, dataset) -> tuple[dict | None, dict]:
    """(the checkpoint to restore or None for a fresh start, the operational fields this resume
    changed). Raises ConfigError (refused) or RunFinished (nothing left to train)."""
    if cfg.restart:
        for d in run_dirs:
            rundir.clear_run(d)
        return None, {}
    holding = [r for r in run_dirs if rundir.holds_run(r)]
    if not holding:
        return None, {}   # also with --resume: nothing to resume, a fresh start
    status = rundir.read_status(holding[0]) or {}
    if not cfg.resume:
        raise ConfigError(f"--out/--run-id: {holding[0]} already holds a run (status "
                          f"{status.get('status', 'unknown')}); pass --resume to continue it, "
                          "--restart to replace it, or choose another --run-id")
    first = run_dirs[0]   # holds the checkpoint (of every packed run)
    ck, old, sha = _recorded_run(first)
    diffs, changes = resume_differences(old, effective_config(cfg, workers))
    if sha != dataset.checksum:
        diffs.append(f"dataset: sha256 {sha[:12]}... in the run, {dataset.checksum[:12]}... now")
    if diffs:
        raise ConfigError(f"--resume: {first} was made with a different configuration: "
                          + "; ".join(diffs) + ". Pass --restart to start it over with the "
                          "new values, or choose another --run-id")
    if status.get("status") in ("done", "diverged"):   # finished: never trained again
        raise RunFinished(f"{first} is already {status['status']} (epoch {status.get('epoch')})"
                          "; nothing to resume. Pass --restart to train it again",
                          0 if status["status"] == "done" else 3)
    if ck is None:   # killed before its first checkpoint: start over
        for d in run_dirs:
            rundir.clear_progress(d)
        return None, changes
    for d, rows in zip(run_dirs, checkpoint_rows(ck)):
        rundir.rewrite_metrics(d, rows)
        rundir.keep_rounds_through(d, ck["epoch"])
        rundir.keep_csv_through(rundir.diagnostics_path(d), ck["epoch"])
    return ck, changes


def _recorded_run(run_dir: Path) -> tuple[dict | None, dict, str]:
    """(checkpoint or None, the config it ran with, its dataset checksum): from the checkpoint,
    or from config.json for a run killed before its first checkpoint."""
    path = rundir.checkpoint_path(run_dir)
    if path.exists():
        import json
        ck = load_checkpoint(path)
        return ck, json.loads(ck["config"]), ck["dataset_sha256"]
    try:
        meta = rundir.read_config(run_dir)
        old = dict(meta["config"], workers=meta["derived"]["workers"])
        sha = meta["provenance"]["dataset"]["sha256"]
        if PACKED_RUNS in meta["derived"]:   # config.json holds one run of a packed sweep
            old["intervals"] = meta["derived"][PACKED_RUNS]["intervals"]
    except (rundir.RecordError, KeyError, TypeError):
        raise ConfigError(f"--resume: {run_dir} holds files of a run but no readable "
                          "checkpoint, and its config.json is not a readable run record; pass "
                          "--restart to replace it") from None
    return None, old, sha
