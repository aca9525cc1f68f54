"""Records that never lie (issue 14): a resume must match what ran, a finished run is never
retrained, config.json is strict JSON, only the shared copy is held to its known hash, a torn
metrics.csv is named, an I/O failure mid-run ends with one line and `failed`, and a speed-up is
shown only where it means something.

Single-process runs of the packed backend: the record logic is the same as under Horovod.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import bad_inputs
from prsgd.core import config as config_mod
from prsgd.data import dataset as data
from prsgd.data import sources as data_sources
from prsgd.plots import figure3 as plot
from prsgd.records import results, rundir
from prsgd.train import main

BASE = bad_inputs.BASE


def train(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([*BASE, *args])
    return code, err.getvalue()


def files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


# --- resume compares the whole config ---------------------------------------------------------
def test_resume_differences_compares_every_field_and_allows_only_operational_ones():
    old = config_mod.preset("smoke").to_dict()
    same, changed = config_mod.resume_differences(old, dict(old, resume=True))
    assert same == [] and changed == {}
    refused, changed = config_mod.resume_differences(
        old, dict(old, test_subset=40, max_steps=64, progress=False, eval_every=2))
    assert refused == ["--eval-every: 1 in the run, 2 now", "--max-steps: 0 in the run, 64 now",
                       "--test-subset: 256 in the run, 40 now"]
    assert changed == {"progress": [True, False]}
    # A field the old record lacks is compared with its default, not skipped.
    assert config_mod.resume_differences({k: v for k, v in old.items() if k != "diagnostics"},
                                         dict(old, diagnostics=True))[0] == \
        ["--diagnostics: False in the run, True now"]


# --- strict JSON ---------------------------------------------------------------------------------
def test_records_are_strict_json(tmp_path):
    with pytest.raises(ValueError):
        rundir.write_json_atomic(tmp_path / "x.json", {"lr": float("nan")})
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(config_mod.ConfigError, match="--lr: must be a finite number"):
        config_mod.from_args(["--lr", "nan"]).validate()
    with pytest.raises(config_mod.ConfigError, match="--slowdown: must be a finite number"):
        config_mod.from_args(["--backend", "horovod", "--slowdown", "inf"]).validate()


# --- only the shared copy is held to its known sha256 -------------------------------------------
def test_a_users_zips_named_train_and_test_are_not_held_to_the_shared_hash(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("PRSGD_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "mine"
    for split in ("train", "test"):
        bad_inputs.make_zip(mine / f"{split}.zip")
    ds = data_sources.imagefolder(str(mine))
    assert ds.name == "imagefolder" and len(ds.train_y) == 20   # loads; not "cifar10-jpeg-q75"
    # A folder whose README says it is the shared copy is held to the known hash.
    (mine / "README.md").write_text("train.zip " + data_sources.KNOWN_SHA256["train.zip"] + "\n")
    with pytest.raises(data.DataError, match="train.zip: sha256 differs from the known copy"):
        data_sources.imagefolder(str(mine))


# --- metrics.csv torn by a kill -----------------------------------------------------------------
# The committed layout of metrics.csv (results/ must keep loading): the trainer's row keys.
METRIC_COLUMNS = ("epoch", "step", "train_seconds", "train_loss", "train_acc", "lr", "rounds",
                  "rounds_local", "bytes", "compute_seconds", "comm_seconds", "test_loss",
                  "test_acc", "full_train_loss", "bytes_local", "comm_seconds_local",
                  "worker_steps")
HEADER = ",".join(METRIC_COLUMNS)


def row(epoch: int, loss: str = "0.5") -> str:
    vals = {"epoch": str(epoch), "step": str(4 * epoch), "train_seconds": "1.5",
            "train_loss": loss, "train_acc": "0.25", "lr": "0.1"}
    return ",".join(vals.get(c, "") for c in METRIC_COLUMNS)


def run_dir_with(tmp_path: Path, lines: list[str]) -> Path:
    run = tmp_path / "r"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps({"config": {"run_id": "r"}}))
    (run / "metrics.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    return run


def test_a_torn_last_row_is_dropped_with_a_warning_naming_the_file(tmp_path):
    for torn in (row(3)[: len(row(3)) // 2], row(3).rsplit(",", 3)[0] + ",0.",
                 row(3, loss="1e-")):
        run = run_dir_with(tmp_path, [row(1), row(2), torn])
        with pytest.warns(UserWarning, match=f"{run / 'metrics.csv'}: its last line is torn"):
            _, df = results.load_run(run)
        assert list(df["epoch"]) == [1, 2] and list(df["train_loss"]) == [0.5, 0.5]


def test_a_torn_row_mid_file_fails_naming_the_file(tmp_path):
    run = run_dir_with(tmp_path, [row(1)[:20], row(2)])
    with pytest.raises(ValueError, match=f"{run / 'metrics.csv'}: line 2 is torn"):
        results.load_run(run)


# --- metrics.csv's writer: its columns are fixed by its first row or the file's header ---------------
def test_a_row_with_a_column_the_file_lacks_is_refused_not_dropped(tmp_path):
    w = rundir.MetricsWriter(tmp_path / "m.csv")
    w.write({"epoch": 1, "train_loss": 0.5})
    with pytest.raises(ValueError, match=r"m\.csv: a row with columns the file does not have: "
                                         r"\['new'\]"):
        w.write({"epoch": 2, "train_loss": 0.4, "new": 1})
    w.close()
    assert (tmp_path / "m.csv").read_text().splitlines() == ["epoch,train_loss", "1,0.5"]


def test_a_run_resumed_into_a_file_older_than_a_column_keeps_the_files_layout(tmp_path):
    """A metrics.csv written before comm_seconds_min/_max existed: a resume appends rows of its
    own columns, without the later ones, and any other unknown column is still refused."""
    (tmp_path / "m.csv").write_text("epoch,comm_seconds\n1,2.0\n")
    w = rundir.MetricsWriter(tmp_path / "m.csv")
    w.write({"epoch": 2, "comm_seconds": 3.0, "comm_seconds_min": 1.0, "comm_seconds_max": 3.0})
    with pytest.raises(ValueError, match="does not have: \\['other'\\]"):
        w.write({"epoch": 3, "comm_seconds": 3.0, "other": 1})
    w.close()
    assert (tmp_path / "m.csv").read_text().splitlines() == ["epoch,comm_seconds", "1,2.0",
                                                              "2,3.0"]


def test_one_process_holds_every_worker_so_its_comm_spread_is_its_own_seconds(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["--preset", "smoke", "--backend", "packed", "--workers", "2", "--interval",
                     "2", "--dataset", "synthetic", "--train-subset", "64", "--test-subset", "16",
                     "--batch-size", "8", "--epochs", "2", "--eval-every", "0", "--out",
                     str(tmp_path), "--run-id", "spread"]) == 0
    df = pd.read_csv(tmp_path / "spread" / "metrics.csv")
    assert (df["comm_seconds"] > 0).all()
    assert list(df["comm_seconds_min"]) == list(df["comm_seconds"])
    assert list(df["comm_seconds_max"]) == list(df["comm_seconds"])


# --- the speed-up column --------------------------------------------------------------------------
def summary(epochs: int, loss_i4: float, status_i4: str = "done") -> pd.DataFrame:
    rows = []
    for interval, secs, loss, status in ((1, 40.0, 1.0, "done"), (4, 9.0, loss_i4, status_i4)):
        for e in range(1, epochs + 1):
            rows.append({"run_id": f"I{interval}", "interval": interval, "seed": 0, "epoch": e,
                         "step": e, "train_loss": loss, "test_acc": 0.5, "rounds": e,
                         "bytes": e, "train_seconds": secs * e / epochs, "comm_seconds": 0.0,
                         "status": status})
    return plot.summary_table(pd.DataFrame(rows))


def test_speedup_only_where_it_means_something():
    assert summary(3, 0.9)["speedup_vs_I1"].tolist() == pytest.approx([1.0, 40 / 9])
    for table in (summary(3, float("nan")), summary(3, 0.9, "diverged"), summary(1, 0.9)):
        s = table["speedup_vs_I1"].tolist()
        assert math.isnan(s[1]), table
        assert "| n/a |" in plot.to_markdown(table)


# --- an I/O failure mid-run -----------------------------------------------------------------------
def assert_io_failure(p, path: Path, reason: str, errno: int, run: Path) -> dict:
    """Exit 1, no traceback, ONE stderr line naming `path` and the error; status.json of `run`
    says `failed` and why. Returns the status."""
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == [f"prsgd.train: error: {path}: {reason} (errno {errno})"], p.stderr
    st = json.loads((run / "status.json").read_text())
    assert st["status"] == "failed" and reason in st["message"], st
    return st


# --- issue 18 §5: a run that talks ---------------------------------------------------------------
def test_a_run_prints_a_start_banner_and_elapsed_and_eta_on_every_epoch(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--preset", "smoke", "--backend", "packed", "--workers", "2",
                     "--dataset", "synthetic", "--train-subset", "64", "--test-subset", "16",
                     "--batch-size", "8", "--epochs", "2", "--out", str(tmp_path),
                     "--run-id", "talk"])
    assert code == 0
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()                     # lines only, through any prefixes
    banner = lines[:4]
    assert banner[0] == f"[talk] run directory: {tmp_path / 'talk'}"
    assert banner[1].startswith("[talk] config: preset smoke, algorithm prsgd, interval ")
    assert "2 epochs" in banner[1] and "batch 8 per worker" in banner[1]
    assert banner[2].startswith("[talk] world: backend packed, 2 workers on 1 process(es)")
    assert "device cpu" in banner[2]
    assert banner[3].startswith("[talk] dataset: synthetic, 64 training and 16 test samples")
    epochs = [l for l in lines if l.startswith("[talk] epoch ")]
    assert [l.split()[2] for l in epochs] == ["1/2", "2/2"]           # one line per epoch
    clock = r"(\d+ s|\d+ min \d\d s|\d+ h \d\d min)"
    assert all(re.search(rf"\| elapsed {clock} ETA {clock}$", l) for l in epochs), epochs
    assert epochs[-1].endswith("ETA 0 s")
    # the sweep's progress reads the epoch reached from status.json
    assert rundir.read_status(tmp_path / "talk")["epoch"] == 2


def test_decoding_a_jpeg_dataset_says_what_it_is_doing(tmp_path, monkeypatch):
    monkeypatch.setenv("PRSGD_CACHE", str(tmp_path / "cache"))
    bad_inputs.make_zip(tmp_path / "mine" / "train.zip")
    bad_inputs.make_zip(tmp_path / "mine" / "test.zip")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        data_sources.imagefolder(str(tmp_path / "mine"))
    said = err.getvalue().splitlines()
    assert any(l.startswith("data: decoding 20 images of ") for l in said), said
    assert any(re.fullmatch(r"data: 20 images decoded in \d+\.\d s", l) for l in said), said
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        data_sources.imagefolder(str(tmp_path / "mine"))      # cached: nothing to say
    assert err.getvalue() == ""
