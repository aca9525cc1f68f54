"""Theory diagnostics: consensus distance (by hand on a quadratic, packed and real Horovod ranks),
the Lemma 1 bound on real short runs, Corollary 1 in config.json."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import ROOT, horovodrun, run_python
from prsgd.core import config as config_mod
from prsgd.train import run


@pytest.mark.horovod
@pytest.mark.parametrize("interval", [1, 4])
def test_horovod_consensus_from_the_fused_allreduce_equals_hand_value(interval):
    proc = horovodrun(2, [str(ROOT / "tests" / "helpers" / "diag_quadratic_worker.py"), str(interval)],
                      timeout=180)
    rows = [json.loads(l.split("]<stdout>:", 1)[-1]) for l in proc.stdout.splitlines()
            if '"rank"' in l]
    assert sorted(r["rank"] for r in rows) == [0, 1]
    for r in rows:
        for logged in r["logged"]:
            assert logged == pytest.approx(r["expected"], rel=1e-4)
        assert r["after"] == pytest.approx(0.0, abs=1e-9)
        assert r["x_err"] < 1e-5                         # the fused round still averaged x
        assert r["row"]["consensus_mean"] == pytest.approx(r["expected"], rel=1e-4)


def _short_run(tmp_path, interval, **kw):
    kw = {**dict(backend="packed", workers=2, interval=interval, momentum=0.0, diagnostics=True,
                 train_subset=256, batch_size=8, epochs=2, lr_milestones=(), eval_every=0,
                 progress=False, out=str(tmp_path), run_id=f"I{interval}"), **kw}
    cfg = config_mod.preset("smoke", **kw)
    run_dir = run(cfg)
    return json.loads((run_dir / "config.json").read_text()), \
        pd.read_csv(run_dir / "diagnostics.csv"), run_dir


def test_real_run_consensus_below_lemma1_and_grows_with_interval(tmp_path):
    """ResNet20 (packed, N = 2, plain SGD as in Lemma 1): the logged consensus distance stays
    below 4γ²I²G² from the run's own G², and grows with I."""
    means = {}
    for interval in (1, 2, 8):
        meta, df, _ = _short_run(tmp_path, interval, train_subset=128)   # 8 steps per epoch
        assert len(df) == 2 and (df["rounds"] == 8 // interval).all()
        assert (df["grad_sq"] > 0).all()
        assert (df["consensus_mean"] > 0).all()
        assert (df["consensus_max"] <= df["lemma1_bound"]).all(), df
        assert meta["theory"]["T"] == 16 and meta["theory"]["N"] == 2
        assert meta["theory"]["inside_corollary1"] == (interval <= 16 ** 0.25 / 2 ** 0.75)
        means[interval] = df["consensus_mean"].mean()
    assert means[1] < means[2] < means[8], means


def test_diagnostics_do_not_change_training(tmp_path):
    """The flag only observes: same losses, same weights with and without it."""
    kw = dict(train_subset=128, batch_size=8, epochs=1, eval_every=0, progress=False,
              backend="packed", workers=2, interval=2)
    a = run(config_mod.preset("smoke", out=str(tmp_path), run_id="on", diagnostics=True, **kw))
    b = run(config_mod.preset("smoke", out=str(tmp_path), run_id="off", **kw))
    la, lb = (pd.read_csv(d / "metrics.csv")["train_loss"].tolist() for d in (a, b))
    assert la == lb
    assert (a / "diagnostics.csv").exists() and not (b / "diagnostics.csv").exists()


@pytest.mark.horovod
def test_horovod_and_packed_log_the_same_consensus(tmp_path):
    """The Horovod formula (fused ‖x_i − ref‖², minus ‖x̄ − ref‖²) agrees with the packed direct
    computation on the same run (logistic regression: the two backends run the same maths)."""
    args = ["--model", "logreg", "--dataset", "synthetic_logreg", "--augment", "false",
            "--train-subset", "256", "--batch-size", "4", "--epochs", "2", "--interval", "4",
            "--lr", "0.5", "--momentum", "0", "--lr-milestones", "none", "--eval-every", "0",
            "--diagnostics", "--progress", "false", "--out", str(tmp_path)]
    horovodrun(2, ["-m", "prsgd.train", *args, "--run-id", "hvd"], timeout=240)
    run_python(["-m", "prsgd.train", *args, "--backend", "packed", "--workers", "2",
                "--run-id", "packed"], timeout=240)
    h, p = (pd.read_csv(tmp_path / r / "diagnostics.csv") for r in ("hvd", "packed"))
    assert (h["consensus_mean"] > 0).all()
    for col in ("consensus_mean", "consensus_last", "grad_sq"):
        assert h[col].tolist() == pytest.approx(p[col].tolist(), rel=2e-3), col


def test_plot_consensus(tmp_path):
    from prsgd.plots.theory import plot_consensus
    dirs = [_short_run(tmp_path, i, epochs=1, train_subset=128)[2] for i in (2, 8)]
    out = plot_consensus(dirs, tmp_path / "c.png")
    assert out.stat().st_size > 10_000
    with pytest.raises(FileNotFoundError, match="--diagnostics"):
        plot_consensus([tmp_path], tmp_path / "x.png")
