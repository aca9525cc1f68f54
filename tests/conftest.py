"""Shared test helpers: paths, a real `horovodrun` launcher, small configs."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# metrics.csv columns that are clocks: they differ between otherwise identical runs
WALL_CLOCK = ["train_seconds", "compute_seconds", "comm_seconds", "comm_seconds_local",
              "comm_seconds_min", "comm_seconds_max"]
SRC = ROOT / "src"
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


def load_ckpt(run_dir: Path) -> dict:
    import torch
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.csv as text rows without the clocks: equal rows mean equal training."""
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in csv.DictReader(f)]


def metric_frame(run_dir: Path):
    """metrics.csv as a DataFrame without the clocks."""
    import pandas as pd
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=WALL_CLOCK, errors="ignore")


def run_status(run_dir: Path) -> dict:
    """status.json, or {} while it is missing or half-written."""
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


class StopAt:
    """Trainer hook: a SIGTERM-like interruption right after local step `step`."""

    def __init__(self, step: int):
        self.step = step

    def after_step(self, trainer, step, events):
        if step == self.step:
            import signal
            from prsgd.records.lifecycle import Interrupted
            raise Interrupted(signal.SIGTERM)


def replica_rows(flat, replicas: int) -> list:
    """A packed ResNet20 flat buffer as each replica's [params | BN stats | momentum] (the
    layout of one Horovod rank's buffer)."""
    import torch
    from prsgd.core.flat import FlatModel
    from prsgd.core.models import ResNet20
    fm = FlatModel(ResNet20(replicas=replicas), replicas)
    return [torch.cat([flat[o:o + k].view(replicas, -1)[r]
                       for o, k in fm.region_segments(True)]) for r in range(replicas)]


def rank_pids(run_id: str, launcher: str = "horovodrun") -> dict[int, int]:
    """{rank: pid} of run `run_id`'s training processes, from /proc: not the launcher, not
    torchrun's agent (`launcher`: "horovodrun" ranks carry HOROVOD_RANK, "torchrun" ones RANK)."""
    var = b"HOROVOD_RANK" if launcher == "horovodrun" else b"RANK"
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            env = dict(e.split(b"=", 1) for e in (d / "environ").read_bytes().split(b"\0")
                       if b"=" in e)
        except OSError:
            continue
        if (b"prsgd.train" in cmd and run_id.encode() in cmd and var in env
                and b"horovodrun" not in b" ".join(cmd)
                and (launcher != "torchrun" or b"TORCHELASTIC_RUN_ID" in env)):
            out[int(env[var])] = int(d.name)
    return out


def wait_for(cond, timeout: float, what: str, proc=None, poll: float = 0.05) -> None:
    """Poll `cond` until true; fail when `proc` ends first (with its output) or at `timeout`."""
    end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            stream = proc.stdout or proc.stderr
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n"
                        f"{stream.read()[-3000:] if stream else ''}")
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll)


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def horovodrun(np_: int, args: list[str], timeout: float = 300, check: bool = True,
               env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run `horovodrun -np N --gloo python ARGS...` for real; returns the finished process."""
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    if exe is None:
        pytest.fail("horovodrun not found: run the tests through `make test`")
    cmd = [exe, "-np", str(np_), "--gloo", sys.executable, *args]
    proc = subprocess.run(cmd, env=subprocess_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n"
                             f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def torchrun(nproc: int, args: list[str], timeout: float = 300, check: bool = True,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc-per-node N ARGS...` for real (torchrun from the venv
    that runs the tests; --standalone: a private rendezvous on a free localhost port)."""
    cmd = torchrun_command(nproc, args)
    proc = subprocess.run(cmd, env=subprocess_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n"
                             f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    exe = shutil.which("torchrun", path=subprocess_env()["PATH"])
    if exe is None:
        pytest.fail("torchrun not found next to the test's python: run the tests through "
                    "`make test`")
    return [exe, "--standalone", "--nproc-per-node", str(nproc), *args]


def run_python(args: list[str], timeout: float = 300, check: bool = True, env=None):
    proc = subprocess.run([sys.executable, *args], env=subprocess_env(**(env or {})),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"python {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "train.zip").exists():
        pytest.skip("shared JPEG CIFAR-10 copy not present")
    return SHARED_DATA


# --- helpers shared by a unit test file and its integration twin ---------------------------------
def toy_clock(**kw):
    """A clock calibration: 2 ranks per node: intra 1 GB/s, alpha 10 us; inter 100 MB/s, alpha
    100 us; 1 ms overhead; `kw` goes into its compute section (`step`: seconds per step)."""
    from prsgd.clock.model import KIND, Calibration
    doc = {"kind": KIND, "name": "test", "compute": {"seconds_per_step": kw.pop("step", 0.1)},
           "network": {"ranks_per_node": 2, "overhead_s": 1e-3, "levels": {
               "intra": {"alpha_s": 1e-5, "bandwidth_Bps": 1e9},
               "inter": {"alpha_s": 1e-4, "bandwidth_Bps": 1e8}}}}
    doc["compute"].update(kw)
    return Calibration.from_dict(doc)


def toy_clock_run(tmp_path, rows, **cfg):
    """A run directory for the clock: a PR-SGD config (4 workers) and `rows` as metrics.csv."""
    import pandas as pd
    d = tmp_path / "run"
    d.mkdir()
    meta = {"config": {"algorithm": "prsgd", "interval": 4, "precision": "fp32", **cfg},
            "derived": {"workers": 4, "averaged_floats": 250_000}}
    (d / "config.json").write_text(json.dumps(meta))
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    return d, meta


def write_toy_run(root, rid, interval, losses, *, backend="horovod", world=4, cores=16,
                  group_size=0, rounds_local=0):
    """A run directory ROOT/runs/RID as the trainer writes it, one epoch of 16 steps per loss
    (10 s each, 1 s of it communication), for the plots and the clock."""
    import pandas as pd
    d = root / "runs" / rid
    d.mkdir(parents=True)
    meta = {"config": {"run_id": rid, "algorithm": "hier" if group_size else "prsgd",
                       "interval": interval, "seed": 0, "dataset": "synthetic",
                       "backend": backend, "group_size": group_size, "precision": "fp32"},
            "derived": {"workers": world, "averaged_floats": 1000, "steps_per_epoch": 16,
                        "total_steps": 16 * len(losses)},
            "provenance": {"world_size": world, "cpu_count": cores, "devices": ["cpu (2 cores)"]}}
    (d / "config.json").write_text(json.dumps(meta))
    rows = []
    for e, loss in enumerate(losses, 1):
        rounds = 16 * e // interval
        loc = rounds_local * e
        rows.append({"epoch": e, "step": 16 * e, "train_seconds": 10.0 * e, "train_loss": loss,
                     "train_acc": 0.5, "lr": 0.1, "rounds": rounds, "rounds_local": loc,
                     "bytes": (rounds + loc) * 4000, "bytes_local": loc * 4000,
                     "compute_seconds": 9.0 * e, "comm_seconds": 1.0 * e,
                     "comm_seconds_local": 0.0, "test_acc": 0.3})
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)


@pytest.fixture
def toy_sweep(tmp_path):
    """A sweep folder of two toy runs, I = 1 and I = 4, three epochs each."""
    write_toy_run(tmp_path / "s", "I1", 1, [2.0, 1.0, 0.5])
    write_toy_run(tmp_path / "s", "I4", 4, [2.2, 1.2, 0.8])
    return tmp_path / "s"


def toy_calibration_file(tmp_path, step=0.01):
    """TMP/cal.json: one network level at 4,000 B/s, `step` seconds per local step."""
    from prsgd.clock.model import KIND
    doc = {"kind": KIND, "name": "toy box", "compute": {"seconds_per_step": step},
           "network": {"ranks_per_node": 4, "overhead_s": 0.0,
                       "levels": {"intra": {"alpha_s": 0.0, "bandwidth_Bps": 4000.0}}}}
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(doc))
    return p


def killed_after_first_checkpoint(cut: Path, ref: Path) -> None:
    """The records of a run of `ref`'s config killed after its first checkpoint: the config in
    the checkpoint and in config.json is the full run's (no --max-steps)."""
    import torch
    ck = load_ckpt(cut)
    ck["config"] = load_ckpt(ref)["config"]
    torch.save(ck, cut / "checkpoint.pt")
    meta, full = (json.loads((d / "config.json").read_text()) for d in (cut, ref))
    meta["config"], meta["derived"] = full["config"], full["derived"]
    (cut / "config.json").write_text(json.dumps(meta))


def run_bench(*args, **kwargs):
    """benchmarks/bench.py's run_bench (the benchmarks are scripts, outside the package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("prsgd_bench", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_bench(*args, **kwargs)


ROW_COLUMNS = ["epoch", "step", "train_loss", "train_acc", "lr", "rounds", "rounds_local",
               "bytes", "test_loss", "test_acc"]


def row_metrics(run_dir):
    """metrics.csv's columns that equal runs must agree on (no clocks)."""
    import pandas as pd
    return pd.read_csv(run_dir / "metrics.csv")[ROW_COLUMNS]


def rel(a, b):
    """Relative difference |a - b| / |b| of two tensors."""
    return float((a - b).norm() / b.norm())


def schedule_of(algorithm: str, workers: int, *, total_steps: int = 0, steps_per_epoch: int = 1,
                **options):
    """The schedule a registered algorithm makes, by its real path (config -> algorithm class):
    `options` are config fields, the algorithm's own options included."""
    from prsgd.algorithms import algorithm_class
    from prsgd.core.config import preset
    cfg = preset("smoke", algorithm=algorithm, **options)
    return algorithm_class(algorithm)(cfg, workers=workers, local_workers=[0],
                                      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                                      backend="horovod").schedule


# --- the unit tier starts no process --------------------------------------------------------------
# tests/unit/ is the fast tier (`make test-fast`): in-process only. A unit test (or a fixture it
# uses) that starts a process fails here, so the tier cannot silently grow slow; such tests belong
# in tests/integration/. `git` and `uname` are allowed: run records ask them for their commit and
# (platform.platform(), once per process) the processor (provenance).
UNIT_DIR = Path(__file__).resolve().parent / "unit"
_in_unit_test = [False]
_execute_child = subprocess.Popen._execute_child


def _refuse_in_unit_tests(self, args, *rest, **kw):
    program = Path(str(args[0] if isinstance(args, (list, tuple)) else args).split()[0]).name
    if _in_unit_test[0] and program not in ("git", "uname"):
        raise AssertionError(f"a unit test started a process ({args!r}): move it to "
                             "tests/integration/")
    return _execute_child(self, args, *rest, **kw)


subprocess.Popen._execute_child = _refuse_in_unit_tests


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _in_unit_test[0] = UNIT_DIR in Path(str(item.fspath)).resolve().parents
    try:
        yield
    finally:
        _in_unit_test[0] = False
