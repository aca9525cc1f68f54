"""The sweep driver, Figure 3 and the notebook, end to end with real training runs.

The tiny sweep goes through the real driver and `horovodrun -np 2 --gloo`; the resume and failure
tests use the packed backend (one process per run) to stay fast: the driver logic is the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from conftest import ROOT, run_python, subprocess_env
from prsgd.experiments import sweep
from prsgd.experiments.manifest import Manifest
from prsgd.records.results import load_sweep

# 2 workers x 64 images, batch 8: 8 local steps per epoch; --max-steps 10 makes T = 10.
TINY = ["--preset", "smoke", "--train-subset", "128", "--test-subset", "32", "--batch-size", "8",
        "--epochs", "2", "--max-steps", "10", "--checkpoint-every", "0"]
T = 10


def sweep_cmd(out: Path, *opts: str, train=TINY) -> list[str]:
    return [str(ROOT / "scripts" / "sweep.py"), "--out", str(out), "--data", "synthetic",
            *opts, "--", *train]


def manifest(sweep_dir: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in json.loads((sweep_dir / "manifest.json").read_text())["runs"]}


def fingerprint(run_dir: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(run_dir.iterdir())}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Intervals 1 and 4, two real Horovod ranks each, synthetic data, T = 10 local steps."""
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    proc = run_python(sweep_cmd(out, "--np", "2", "--intervals", "1,4", "--run-timeout", "240"),
                      timeout=600)
    return out, proc


# --- 1. a tiny sweep through horovodrun, then the plot -------------------------------------------
@pytest.mark.horovod
@pytest.mark.slow
def test_tiny_sweep_then_figure(tiny_sweep, tmp_path):
    out, proc = tiny_sweep
    runs = manifest(out)
    assert {r: runs[r]["status"] for r in runs} == {"I1-s0": "done", "I4-s0": "done"}
    assert "horovodrun -np 2 --gloo" in runs["I4-s0"]["command"]
    assert "epoch 2/2" in proc.stdout and "sweep [" in proc.stdout      # the progress display
    for rid in runs:
        assert (out / "runs" / rid / "metrics.csv").exists()

    fig_dir = tmp_path / "fig"
    p = run_python([str(ROOT / "scripts" / "plot_figure3.py"), str(out), "--out", str(fig_dir)])
    for name in ("figure3.png", "figure3.pdf", "test_accuracy.png", "summary.csv", "summary.md"):
        assert (fig_dir / name).stat().st_size > 1000 or name.startswith("summary"), name
    assert (fig_dir / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(fig_dir / "summary.csv")
    assert list(table["interval"]) == [1, 4]
    assert list(table["label"]) == ["parallel mini-batch SGD (I=1)", "PR-SGD I=4"]
    assert (table["steps"] == T).all()
    assert list(table["rounds"]) == [T // 1, T // 4]
    # buffer bytes per round are the same for every I: the flat buffer of one model; a ring
    # allreduce between the 2 ranks sends 2(n-1)/n = 1 times that
    per_round = table["buffer_bytes"] / table["rounds"]
    assert per_round.iloc[0] == per_round.iloc[1] > 0
    assert (table["ring_bytes_sent"] == table["buffer_bytes"]).all()
    assert table.loc[0, "speedup_vs_I1"] == 1.0
    assert "| 4 | PR-SGD I=4 |" in (fig_dir / "summary.md").read_text()
    assert str(fig_dir / "figure3.png") in p.stdout


@pytest.mark.horovod
@pytest.mark.slow
def test_load_sweep_reads_manifest_status(tiny_sweep):
    out, _ = tiny_sweep
    df = load_sweep(out)
    assert set(df["status"]) == {"done"}
    assert sorted(df["interval"].unique()) == [1, 4]
    assert set(df.attrs["configs"]) == {"I1-s0", "I4-s0"}
    # the loss of each run is that run's own metrics.csv, row for row
    own = pd.read_csv(out / "runs" / "I4-s0" / "metrics.csv")
    assert list(df[df["run_id"] == "I4-s0"]["train_loss"]) == list(own["train_loss"])


# --- 2. interrupted and continued ----------------------------------------------------------------
@pytest.mark.slow
def test_rerun_skips_finished_runs_and_completes_the_rest(tmp_path):
    """Kill the sweep (SIGTERM) while its second run trains; start it again."""
    out = tmp_path / "sw"
    opts = ["--backend", "packed", "--np", "2", "--intervals", "1,2"]
    first = subprocess.Popen([sys.executable, *sweep_cmd(out, *opts)], env=subprocess_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            m = manifest(out) if (out / "manifest.json").exists() else {}
            if m.get("I2-s0", {}).get("status") == "running":
                break
            time.sleep(0.5)
        else:
            pytest.fail("the second run never started")
        assert m["I1-s0"]["status"] == "done"
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 128 + signal.SIGTERM   # 143 (issue 14; was 130)
    finally:
        first.kill()
    runs = manifest(out)
    assert runs["I2-s0"]["status"] == "interrupted"
    assert not [p for p in psutil.process_iter(["cmdline"])          # no orphaned ranks
                if str(out) in " ".join(p.info["cmdline"] or [])]
    before = fingerprint(out / "runs" / "I1-s0")
    # whether or not the killed run got as far as its run dir: leave a half-written one behind
    half = out / "runs" / "I2-s0"
    half.mkdir(parents=True, exist_ok=True)
    (half / "metrics.csv").write_text("epoch,step\n1,8\n")

    second = run_python(sweep_cmd(out, *opts), timeout=300)
    assert "1 finished run(s) skipped" in second.stdout
    runs = manifest(out)
    assert all(r["status"] == "done" for r in runs.values())
    assert fingerprint(out / "runs" / "I1-s0") == before           # not rerun
    assert len(pd.read_csv(half / "metrics.csv")) == 2              # restarted: 2 fresh epochs
    assert runs["I2-s0"]["resumed"] is False

    third = run_python(sweep_cmd(out, *opts, "--stop-after", "1"), timeout=120)
    assert "2 finished run(s) skipped" in third.stdout               # all done: nothing runs
    assert fingerprint(out / "runs" / "I1-s0") == before


@pytest.mark.slow
def test_stop_after(tmp_path):
    out = tmp_path / "sw"
    proc = run_python(sweep_cmd(out, "--backend", "packed", "--np", "2", "--intervals", "4,1",
                                "--override", "I4-s0=--lr=-1", "--stop-after", "1"),
                      timeout=300, check=False)
    assert [r["status"] for r in manifest(out).values()] == ["pending", "failed"]  # by I
    assert "stopping after 1 run(s) (--stop-after)" in proc.stdout


@pytest.mark.slow
def test_unfinished_run_with_a_checkpoint_is_resumed_not_deleted(tmp_path):
    """With runs/<ID>/checkpoint.pt present the driver passes --resume (the trainer's resume
    interface) and leaves the run directory in place."""
    out = tmp_path / "sw"
    ckpt = out / "runs" / "I2-s0" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"from an interrupted run")
    run_python(sweep_cmd(out, "--backend", "packed", "--np", "2", "--intervals", "2"),
               timeout=300, check=False)
    run = manifest(out)["I2-s0"]
    assert run["resumed"] is True
    cmd = run["command"].split()
    assert "--resume" in cmd and cmd[cmd.index("--backend") + 1] == "packed"
    assert cmd[cmd.index("--workers") + 1] == "2"
    assert (out / "runs" / "I2-s0").is_dir()


# --- 3. one failing run --------------------------------------------------------------------------
@pytest.mark.slow
def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "sw"
    opts = ["--backend", "packed", "--np", "2", "--intervals", "4,2,1",
            "--override", "I4-s0=--lr=-1",                          # refused by the trainer
            "--override", "I2-s0=--lr=1e30 --max-steps 4"]          # loss becomes nan
    proc = run_python(sweep_cmd(out, *opts), timeout=300, check=False)
    assert proc.returncode == 1
    runs = manifest(out)
    assert runs["I4-s0"]["status"] == "failed"
    assert runs["I4-s0"]["error"].startswith("prsgd.train: error: --lr: must be > 0")
    assert runs["I2-s0"]["status"] == "diverged"
    assert runs["I2-s0"]["error"].startswith("training loss is nan")   # its status.json's
    assert runs["I1-s0"]["status"] == "done"                      # ran after the failures
    assert "did not finish: I4-s0 (failed), I2-s0 (diverged)" in proc.stdout
    # a rerun retries the failed run (here it fails again), not the done or diverged ones
    again = run_python(sweep_cmd(out, *opts), timeout=300, check=False)
    assert again.returncode == 1 and "2 finished run(s) skipped" in again.stdout
    assert "run 1/1 I4-s0: started" in again.stdout


# --- argument checks and helpers (no processes) --------------------------------------------------
def test_changed_sweep_settings_are_refused_on_rerun(tmp_path):
    spec = sweep.SweepSpec(intervals=[1], np=2, train_args=["--epochs", "1"])
    Manifest(tmp_path, spec).save()
    Manifest(tmp_path, sweep.SweepSpec(intervals=[1, 4], np=2, train_args=["--epochs", "1"]))
    with pytest.raises(sweep.SweepError, match="np=2, not 4"):
        Manifest(tmp_path, sweep.SweepSpec(intervals=[1], np=4, train_args=["--epochs", "1"]))


# --- 4. the notebook -----------------------------------------------------------------------------
@pytest.mark.horovod
@pytest.mark.slow
def test_notebook_runs_headless_on_the_tiny_sweep(tiny_sweep, monkeypatch):
    """The notebook on a sweep of real Horovod ranks: Figure 3 with the modelled clock, the
    summary, and per run the rounds, bytes and a measured compute/communication split."""
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    out, _ = tiny_sweep
    monkeypatch.setenv("PRSGD_SWEEP", str(out))
    monkeypatch.setenv("PRSGD_SWEEP_B", str(out))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tool = runpy.run_path(str(ROOT / "scripts" / "execute_notebook.py"))
    nb = tool["execute"](ROOT / "notebooks" / "figure3.ipynb")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # Figure 3, accuracy, the split, loss vs rounds/bytes, measured vs modelled, the comparison
    assert len(images) >= 6
    text = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "modelled: " in text and "| 4 | PR-SGD I=4 |" in text
    split = next(o["data"]["text/plain"] for o in outputs
                 if "comm share" in o.get("data", {}).get("text/plain", ""))
    assert "I1-s0" in split and "I4-s0" in split and "NaN" not in split.split("I1-s0")[1].split("\n")[0]


def test_run_records_hold_no_machine_paths(tmp_path):
    from prsgd.records.results import REPO, portable_command, portable_path
    assert portable_path(str(REPO / "src" / "prsgd" / "train.py")) == "src/prsgd/train.py"
    assert portable_path(str(REPO.parent / "shared" / "data" / "x")) == "../shared/data/x"
    assert portable_path(f"--data={REPO.parent / 'shared'}") == "--data=../shared"
    assert portable_path("/opt/venv/bin/python3.12") == "python"
    assert portable_path(str(tmp_path / "runs")) == "runs"
    assert portable_path("relative/path") == "relative/path"
    assert portable_command(["/x/bin/horovodrun", "-np", "2"]) == "horovodrun -np 2"
    # A real sweep's manifest and run config keep none of this machine's absolute paths.
    out = tmp_path / "sw"
    run_python(sweep_cmd(out, "--backend", "packed", "--np", "2", "--intervals", "2"), timeout=300)
    for f in (out / "manifest.json", out / "runs" / "I2-s0" / "config.json"):
        text = f.read_text()
        assert str(tmp_path) not in text and str(REPO) not in text, f
