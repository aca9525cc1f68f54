"""The checkpoint file's contents: every stateful part's `state_dict()`, saved and loaded.

`checkpoint.pt` holds the state after the last completed checkpointed epoch, as DINO keeps it: the
run variables (step, epoch, train_seconds, metric rows so far) and, per rank, a named dict of the
`state_dict()` of every stateful part (`ranks[r][name]`): `flat` (every worker's flat buffer:
parameters, BN statistics, momentum; local models differ between averagings, so all N are kept),
`loop` (the loop's counters), `counters`/`config_counters` (communication counters of each run),
`algorithm` (each run's algorithm state, e.g. DiLoCo's outer optimizer) and `rng`. Restoring calls
`load_state_dict` on each part of a fully built trainer. Only tensors, numbers, strings, lists and
dicts: it loads with `torch.load(weights_only=True)`. Written through `rundir.atomic_open`
(fsynced): the previous checkpoint stays until the new one is complete, so a kill at any moment
leaves a valid checkpoint (or none).
"""
from __future__ import annotations

from pathlib import Path

import torch

from prsgd.core.errors import ConfigError
from prsgd.records.rundir import atomic_open, tmp_path

FORMAT = 2   # 2: per-rank named state dicts (1: attributes of the old Trainer)


def effective_config(cfg, workers: int) -> dict:
    """The config as it acts: `workers` resolved to the real N (0 means 'the launcher's')."""
    d = cfg.to_dict()
    d["workers"] = workers
    return d


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


def save_checkpoint(obj, path: Path) -> None:
    """Durably and atomically. torch.save turns a failed write into a RuntimeError (i14): it is
    reported as the I/O error it is, naming the file (the previous checkpoint stays)."""
    tmp = tmp_path(path)
    try:
        with atomic_open(path, "wb", durable=True) as f:
            torch.save(obj, f)
    except RuntimeError as e:
        cause = e.__context__
        if not isinstance(cause, OSError):
            raise
        raise OSError(cause.errno, cause.strerror, str(tmp)) from None
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(tmp)) from None


def checkpoint_rows(ck: dict) -> list[list[dict]]:
    """The metric rows of every run directory of a checkpoint (one list per packed run)."""
    return [ck["rows"], *ck.get("packed_rows", [])]


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
