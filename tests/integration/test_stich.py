"""Stich's speed-up experiment: the logistic-regression model/data path through the trainer, the
optimum, the speed-up measurement at a tiny size, and the script entry."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run_python
from prsgd.experiments import stich


def test_speedup_experiment_tiny(tmp_path):
    setup = stich.Setup(n=256, eps=0.02, max_steps=800, out=str(tmp_path / "runs"))
    rows, facts = stich.sweep(setup, workers=(1, 2), intervals=(1, 4), log=lambda *_: None)
    assert [(r["K"], r["H"]) for r in rows] == [(1, 1), (2, 1), (2, 4)]
    for r in rows:
        assert np.isfinite(r["steps_to_eps"]) and r["gap_at_stop"] <= 0.02
        assert r["speedup"] == pytest.approx(rows[0]["steps_to_eps"] / r["steps_to_eps"])
        meta = json.loads((tmp_path / "runs" / r["run_id"] / "config.json").read_text())
        assert meta["config"]["model"] == "logreg" and meta["config"]["workers"] == r["K"]
        assert meta["config"]["weight_decay"] == pytest.approx(1 / 256)
    assert facts["f0_minus_f_star"] > 0.02


def test_speedup_script_writes_csv_figure_and_provenance(tmp_path):
    out = tmp_path / "st"
    run_python([str(ROOT / "scripts" / "stich_speedup.py"), "--workers", "1,2", "--intervals",
                "1,4", "--n", "256", "--eps", "0.02", "--max-steps", "800", "--out", str(out)],
               timeout=400)
    df = pd.read_csv(out / "speedup.csv")
    assert sorted(set(df["H"])) == [1, 4] and (df["speedup"] > 0).all()
    assert (out / "speedup.png").stat().st_size > 10_000
    meta = json.loads((out / "speedup.json").read_text())
    assert meta["theory_fit"]["A"] >= 0 and meta["provenance"]["git"]["commit"]
    bad = run_python([str(ROOT / "scripts" / "stich_speedup.py"), "--workers", "0"], check=False)
    assert bad.returncode == 2 and "--workers" in bad.stderr
