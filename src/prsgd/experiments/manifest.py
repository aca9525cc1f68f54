"""A sweep's manifest.json: its spec and each run's status (pending, running, done, failed with its
error, diverged, interrupted), written atomically after every change (records/rundir.py)."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from prsgd.experiments.spec import SweepError, SweepSpec
from prsgd.records import rundir
from prsgd.records.results import git_info, portable_path


class Manifest:
    def __init__(self, sweep_dir: Path, spec: SweepSpec):
        self.sweep_dir, self.spec = Path(sweep_dir), spec
        self.path = rundir.manifest_path(self.sweep_dir)
        self.runs: dict[str, dict] = {}
        old = rundir.read_manifest(self.sweep_dir)
        if old is not None:
            check_compatible(old.get("spec", {}), spec, self.path)
            self.runs = {r["run_id"]: r for r in rundir.manifest_runs(old, self.path)}
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
        order = sorted(self.runs, key=lambda k: (self.runs[k]["interval"], self.runs[k]["seed"]))
        rundir.write_manifest(self.sweep_dir, {
            "spec": portable_spec(self.spec), "created": self.created, "git": git_info(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs": [self.runs[k] for k in order]})


def portable_spec(spec: SweepSpec) -> dict:
    """The spec as manifest.json keeps it: paths in the training arguments made portable."""
    d = asdict(spec)
    d["train_args"] = [portable_path(a) for a in d["train_args"]]
    if "hostfile" in d["launch"]:
        d["launch"]["hostfile"] = portable_path(d["launch"]["hostfile"])
    return d


def check_compatible(old: dict, spec: SweepSpec, path: Path) -> None:
    new = portable_spec(spec)
    for key in SweepSpec.FIXED:
        if key in old and old[key] != new[key]:
            raise SweepError(f"{path} was made with {key}={old[key]!r}, not {new[key]!r}; "
                             "use another --out for a different sweep")
