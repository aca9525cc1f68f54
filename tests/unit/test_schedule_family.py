"""Every schedule of the family, as pure functions (no processes), and the family's config rules."""
from __future__ import annotations

from conftest import schedule_of

import pytest

from prsgd.core.config import Config, ConfigError, from_args
from prsgd.core.schedule import (GLOBAL, LOCAL, Heterogeneous, Hierarchical, OneShot, Periodic,
                            PostLocal, Varying, lr_at, rounds_through)


def steps_of(schedule, level, upto, worker=0):
    return [t for t in range(1, upto + 1)
            if any(e.level == level for e in schedule.events(t, worker))]


def test_periodic_and_kavg_are_the_same_schedule():
    p = schedule_of("prsgd", workers=4, interval=3)
    k = schedule_of("kavg", workers=4, interval=3)
    assert p == k == Periodic(3, 4)
    assert steps_of(p, GLOBAL, 12) == [3, 6, 9, 12]
    assert p.events(3)[0].groups == ((0, 1, 2, 3),)


def test_gradient_allreduce_counts_a_round_every_step():
    s = schedule_of("gradient_allreduce", workers=2, interval=8)
    assert steps_of(s, GLOBAL, 5) == [1, 2, 3, 4, 5]


def test_hierarchical_levels_and_groups():
    s = schedule_of("hier", workers=8, interval=2, group_size=4, global_every=3)
    assert steps_of(s, LOCAL, 14) == [2, 4, 8, 10, 14]
    assert steps_of(s, GLOBAL, 14) == [6, 12]
    (ev,) = s.events(2)
    assert ev.groups == ((0, 1, 2, 3), (4, 5, 6, 7)) == s.subgroups
    assert ev.group_of(5) == (4, 5, 6, 7)
    assert s.events(6)[0].groups == ((0, 1, 2, 3, 4, 5, 6, 7),)
    assert rounds_through(s, 12) == {GLOBAL: 2, LOCAL: 4}
    # K2 = 1: every group round is a global round
    assert steps_of(Hierarchical(3, 1, 2, 4), LOCAL, 12) == []
    assert steps_of(Hierarchical(3, 1, 2, 4), GLOBAL, 12) == [3, 6, 9, 12]


def test_varying_list_then_repeat():
    s = schedule_of("varying", workers=2, epoch_lengths=(1, 2, 3))
    assert steps_of(s, GLOBAL, 12) == [1, 3, 6, 9, 12]
    assert [s.epoch_of(t) for t in range(1, 8)] == [0, 1, 1, 2, 2, 2, 3]
    assert [s.length(k) for k in range(5)] == [1, 2, 3, 3, 3]


def test_varying_growing_rule():
    s = Varying((2,), 2, growth=2.0)
    assert [s.length(k) for k in range(4)] == [2, 4, 8, 16]
    assert steps_of(s, GLOBAL, 40) == [2, 6, 14, 30]
    assert [s.boundary(k) for k in range(4)] == [2, 6, 14, 30]
    assert all(s.boundary(s.epoch_of(t)) >= t > (s.boundary(s.epoch_of(t) - 1)
                                                  if s.epoch_of(t) else 0) for t in range(1, 40))
    assert [Varying((3,), 1, 1.5).length(k) for k in range(4)] == [3, 4, 7, 10]  # rounded


def test_varying_per_epoch_learning_rates():
    s = Varying((2, 3), 2)
    lrs = [lr_at(t, base_lr=0.1, steps_per_epoch=100, varying=s, epoch_lrs=(0.4, 0.2))
           for t in range(1, 9)]
    assert lrs == [0.4, 0.4, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]   # the last gamma^s repeats
    # without epoch_lrs, the global-epoch milestones apply
    assert lr_at(7, base_lr=0.1, steps_per_epoch=3, milestones=(2,), varying=s) == \
        pytest.approx(0.01)


def test_one_shot_only_at_the_end():
    s = schedule_of("one_shot", workers=3, total_steps=10)
    assert s == OneShot(10, 3)
    assert steps_of(s, GLOBAL, 20) == [10]


def test_post_local_switches_after_E_epochs():
    s = schedule_of("post_local", workers=2, interval=4, local_epochs=2, steps_per_epoch=3)
    assert s == PostLocal(6, 4, 2)
    assert steps_of(s, GLOBAL, 20) == [1, 2, 3, 4, 5, 6, 10, 14, 18]


def test_heterogeneous_step_counts():
    s = schedule_of("hetero", workers=3, worker_intervals=(1, 2, 4))
    assert s.reference == 4 and s.total_rounds(12) == 3
    for w, i in enumerate((1, 2, 4)):
        assert steps_of(s, GLOBAL, 3 * i, worker=w) == [i, 2 * i, 3 * i]
    # the learning rate follows the shared rounds: worker 0's 2nd step is round 2, reference 5
    assert s.reference_step(rounds_done=1, step_in_round=1) == 5
    assert s.reference_step(rounds_done=1, step_in_round=9) == 8   # capped at the round's end
    # equal intervals are Algorithm 1, step for step
    eq = schedule_of("hetero", workers=2, interval=3)
    assert eq.intervals == (3, 3) and eq.total_rounds(12) == 4
    assert [eq.reference_step(r, k) for r in range(2) for k in (1, 2, 3)] == [1, 2, 3, 4, 5, 6]


def test_heterogeneous_time_budget():
    s = schedule_of("hetero", workers=2, interval=5, round_budget_s=0.5)
    assert isinstance(s, Heterogeneous) and s.reference == 5
    assert s.events(1, 0, round_s=0.5) == []          # one more step still fits
    assert s.events(1, 0, round_s=0.51)[0].level == GLOBAL
    assert s.events(7, 1, round_s=2.0)[0].groups == ((0, 1),)
    assert s.total_rounds(23) == 4 and s.total_rounds(3) == 1


# --- config: each option belongs to its algorithm, clear errors, recorded in config.json ------
@pytest.mark.parametrize("argv, flag", [
    (["--algorithm", "prsgd", "--group-size", "2"], "--group-size"),
    (["--algorithm", "hier", "--epoch-lengths", "2,3", "--group-size", "2"], "--epoch-lengths"),
    (["--algorithm", "prsgd", "--round-budget-s", "1"], "--round-budget-s"),
    (["--algorithm", "kavg", "--local-epochs", "1"], "--local-epochs"),
    (["--algorithm", "hetero", "--worker-intervals", "1,2", "--round-budget-s", "1"],
     "--round-budget-s"),
    (["--algorithm", "hetero", "--worker-intervals", "1,2,3"], "--worker-intervals"),
    (["--algorithm", "hier", "--group-size", "3"], "--group-size"),
    (["--algorithm", "varying"], "--epoch-lengths"),
    (["--algorithm", "varying", "--epoch-lengths", "2", "--epoch-growth", "0.5"],
     "--epoch-growth"),
    (["--slowdown", "1,0.5"], "--slowdown"),
    (["--algorithm", "hetero", "--round-budget-s", "1", "--backend", "packed"],
     "--round-budget-s"),
    (["--slowdown", "1,2", "--backend", "packed"], "--slowdown"),
])
def test_family_config_errors_name_the_flag(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        from_args(["--preset", "smoke", "--workers", "2", *argv]).validate(
            None if "packed" in argv else 2)


def test_every_family_config_is_valid_and_round_trips():
    for argv in (["--algorithm", "hier", "--group-size", "2", "--global-every", "3"],
                 ["--algorithm", "varying", "--epoch-lengths", "2,4", "--epoch-lrs", "0.1,0.05",
                  "--epoch-growth", "2"],
                 ["--algorithm", "post_local", "--local-epochs", "1", "--interval", "4"],
                 ["--algorithm", "hetero", "--round-budget-s", "0.5", "--slowdown", "1,2"],
                 ["--algorithm", "kavg", "--interval", "4"], ["--algorithm", "one_shot"],
                 ["--algorithm", "gradient_allreduce"]):
        cfg = from_args(["--preset", "smoke", *argv]).validate(2)
        assert Config.from_dict(cfg.to_dict()) == cfg


def test_plot_labels_name_each_algorithm():
    from prsgd.plots.family import label
    names = []
    for argv in (["--algorithm", "prsgd", "--interval", "4"],
                 ["--algorithm", "kavg", "--interval", "4"],
                 ["--algorithm", "gradient_allreduce"],
                 ["--algorithm", "hier", "--group-size", "2", "--global-every", "3"],
                 ["--algorithm", "varying", "--epoch-lengths", "2,4", "--epoch-growth", "2"],
                 ["--algorithm", "one_shot"], ["--algorithm", "post_local", "--local-epochs", "1"],
                 ["--algorithm", "hetero", "--worker-intervals", "1,2"],
                 ["--algorithm", "hetero", "--round-budget-s", "0.5"]):
        names.append(label(from_args(["--preset", "smoke", *argv]).to_dict()))
    assert names == ["PR-SGD (Alg 1) I=4", "K-AVG K=4", "gradient allreduce",
                     "Hier-AVG S=2 K1=1 K2=3", "Alg 2 K=2,4 x2", "one-shot", "post-local E=1 I=1",
                     "Alg 3 I_i=1,2", "Alg 3 budget 0.5s/round"]
