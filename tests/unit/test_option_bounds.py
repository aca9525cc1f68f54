"""Issue 21 §2: an algorithm's options must fit the run. Each algorithm refuses, with one line
naming the flag, what cannot fit the run's size and length (Algorithm 3's worker intervals longer
than the run), and every learning-rate-like option gets the checks of --lr (finite, > 0, within
the run's precision). In-process: the parser, `validate`, and `prsgd.train.main` for the checks
that need the run's length (known once the data is loaded)."""
from __future__ import annotations

import pytest

from prsgd import train
from prsgd.algorithms import algorithm_class
from prsgd.core.config import ConfigError, from_args

# 2 packed workers x 16 images / batch 8 = 2 local steps per worker in the whole run.
TINY = ["--preset", "smoke", "--backend", "packed", "--workers", "2", "--train-subset", "32",
        "--test-subset", "32", "--batch-size", "8", "--epochs", "1", "--eval-every", "0",
        "--progress", "false", "--device", "cpu"]


def refused(capsys, tmp_path, *argv) -> str:
    code = train.main([*TINY, "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir()), "a refused run must leave no run directory"
    return err


@pytest.mark.parametrize("intervals", ["2,3", "2,1000000"])
def test_hetero_worker_interval_longer_than_the_run_is_refused(capsys, tmp_path, intervals):
    # house1: "2,3" trained 5 worker steps in a run of 4 (status done, epochs disagreeing);
    # "2,1000000" never finished (10 min at 100 % CPU).
    err = refused(capsys, tmp_path, "--algorithm", "hetero", "--worker-intervals", intervals)
    assert err.startswith("prsgd.train: error: --worker-intervals: a round of ")
    assert "is longer than the run (2 steps per worker)" in err


def test_hetero_equal_intervals_longer_than_the_run_name_interval(capsys, tmp_path):
    err = refused(capsys, tmp_path, "--algorithm", "hetero", "--interval", "3")
    assert "--interval: a round of 3 local steps is longer than the run" in err


def test_hetero_interval_that_fits_is_accepted():
    cfg = from_args([*TINY, "--algorithm", "hetero", "--worker-intervals", "1,2"]).validate()
    algorithm_class("hetero").validate_run(cfg, steps_per_epoch=2, total_steps=2)
    with pytest.raises(ConfigError, match="--worker-intervals: a round of 3 local steps"):
        algorithm_class("hetero").validate_run(
            from_args([*TINY, "--algorithm", "hetero", "--worker-intervals", "1,3"]).validate(),
            steps_per_epoch=2, total_steps=2)


@pytest.mark.parametrize("argv, message", [
    (["--algorithm", "diloco", "--outer-lr", "1e39"],
     "--outer-lr: overflows fp32 (largest finite value 3.403e+38) (got 1e+39)"),
    (["--algorithm", "diloco", "--outer-lr", "nan"], "--outer-lr: must be a finite number"),
    (["--algorithm", "diloco", "--outer-lr", "inf"], "--outer-lr: must be a finite number"),
    (["--algorithm", "diloco", "--outer-lr", "0"], "--outer-lr: must be > 0 (got 0.0)"),
    (["--algorithm", "diloco", "--outer-lr", "-1"], "--outer-lr: must be > 0"),
    (["--algorithm", "diloco", "--outer-momentum", "nan"],
     "--outer-momentum: must be a finite number"),
    (["--algorithm", "varying", "--epoch-lengths", "2,2", "--epoch-lrs", "0.1,1e39"],
     "--epoch-lrs: overflows fp32"),
    (["--algorithm", "varying", "--epoch-lengths", "2", "--epoch-lrs", "inf"],
     "--epoch-lrs: must be a finite number"),
    (["--algorithm", "varying", "--epoch-lengths", "2,2", "--epoch-lrs", "0.1,0"],
     "--epoch-lrs: must be > 0"),
    (["--algorithm", "varying", "--epoch-lengths", "2", "--epoch-growth", "1e308"],
     "--epoch-growth: grows the last epoch length beyond"),
    (["--algorithm", "hetero", "--round-budget-s", "inf"], "--round-budget-s: must be a finite"),
])
def test_learning_rate_like_options_get_the_checks_of_lr(argv, message):
    base = [a for a in TINY if a not in ("--backend", "packed")]   # horovod: budgets allowed
    with pytest.raises(ConfigError) as e:
        from_args([*base, *argv]).validate(2)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_lr_like_options_fit_their_precision():
    """1e39 overflows fp32 (and bf16) but is a finite fp64 value: the check follows the run."""
    from_args([*TINY, "--algorithm", "diloco", "--outer-lr", "1e39", "--precision",
               "fp64"]).validate()
    with pytest.raises(ConfigError, match="--outer-lr: overflows bf16"):
        from_args([*TINY, "--algorithm", "diloco", "--outer-lr", "1e39", "--precision",
                   "bf16"]).validate()


def test_diloco_outer_lr_overflow_is_refused_before_training(capsys, tmp_path):
    # house1: an overflow traceback from the outer step after the first round.
    err = refused(capsys, tmp_path, "--algorithm", "diloco", "--outer-lr", "1e39")
    assert err == ("prsgd.train: error: --outer-lr: overflows fp32 (largest finite value "
                   "3.403e+38) (got 1e+39)")


def test_a_round_budget_longer_than_the_steps_take_cannot_hold_the_run():
    """--round-budget-s 1e9: a round still ends once the worker made as many steps in it as the
    run has per worker (house1: the round never ended, and so neither did the run)."""
    from prsgd.algorithms import LoopState
    cfg = from_args([*TINY, "--algorithm", "hetero", "--backend", "horovod",
                     "--round-budget-s", "1e9"]).validate(2)
    algo = algorithm_class("hetero")(cfg, workers=2, local_workers=[0], steps_per_epoch=2,
                                     total_steps=6, backend="horovod")
    assert algo.events(LoopState(step=5, step_in_round=5), round_s=1.0) == []
    (event,) = algo.events(LoopState(step=6, step_in_round=6), round_s=1.0)
    assert event.groups == ((0, 1),)
    # within the budget, the time decides as before
    assert algo.events(LoopState(step=1, step_in_round=1), round_s=2e9)[0] == event
