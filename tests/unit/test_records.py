"""Records that never lie (issue 14): a resume must match what ran, a finished run is never
retrained, config.json is strict JSON, only the shared copy is held to its known hash, a torn
metrics.csv is named, an I/O failure mid-run ends with one line and `failed`, and a speed-up is
shown only where it means something.

Single-process runs of the packed backend: the record logic is the same as under Horovod.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from helpers import bad_inputs
from prsgd.core import config as config_mod
from prsgd.data import dataset as data
from prsgd.plots import figure3 as plot
from prsgd.records import results


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
        results.write_json_atomic(tmp_path / "x.json", {"lr": float("nan")})
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
    ds = data.imagefolder(str(mine))
    assert ds.name == "imagefolder" and len(ds.train_y) == 20   # loads; not "cifar10-jpeg-q75"
    # A folder whose README says it is the shared copy is held to the known hash.
    (mine / "README.md").write_text("train.zip " + data.KNOWN_SHA256["train.zip"] + "\n")
    with pytest.raises(data.DataError, match="train.zip: sha256 differs from the known copy"):
        data.imagefolder(str(mine))


# --- metrics.csv torn by a kill -----------------------------------------------------------------
HEADER = ",".join(results.METRIC_COLUMNS)


def row(epoch: int, loss: str = "0.5") -> str:
    vals = {"epoch": str(epoch), "step": str(4 * epoch), "train_seconds": "1.5",
            "train_loss": loss, "train_acc": "0.25", "lr": "0.1"}
    return ",".join(vals.get(c, "") for c in results.METRIC_COLUMNS)


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
