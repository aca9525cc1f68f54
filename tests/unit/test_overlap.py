"""Overlapped averaging, `--overlap-delay TAU` (src/prsgd/algorithms/overlap.py), in-process
against the packed backend.

Two packed workers of a toy model, one parameter w and one BN-like statistic b per worker, each
descending its own quadratic: w <- w - 0.5 (w - c_i), b <- b - 0.5 (b - 10 c_i), c = (0, 4).
Every number below is a dyadic fraction, so the hand-computed values are exact in fp64.
The driver calls the algorithm as core/loop.py does: after each local step `on_step`, then the
step's `events` and `on_round` (tests/integration/test_overlap.py runs the real loop).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prsgd.algorithms import LoopState, algorithm_class
from prsgd.algorithms.overlap import DelayedRound
from prsgd.backends.packed import PackedComm
from prsgd.clock.model import RunShape, model_counts
from prsgd.core import config as config_mod
from prsgd.core.flat import FlatModel
from prsgd.core.schedule import GLOBAL, Event

C = torch.tensor([0.0, 4.0], dtype=torch.float64)
EVERYONE = Event(GLOBAL, ((0, 1),))


class Toy(nn.Module):
    """R packed replicas: a parameter (R, 1) and a statistic buffer (R, 1)."""

    def __init__(self, replicas: int = 2):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(replicas, 1, dtype=torch.float64))
        self.register_buffer("b", torch.zeros(replicas, 1, dtype=torch.float64))


def setup(flags: list[str], total_steps: int):
    cfg = config_mod.from_args(["--preset", "smoke", "--dataset", "synthetic", "--backend",
                                "packed", "--workers", "2", *flags])
    cfg.validate()
    fm = FlatModel(Toy(), 2)
    comm = PackedComm(fm, 2)
    return fm, comm, make_algorithm(cfg, fm, total_steps)


def make_algorithm(cfg, fm, total_steps: int):
    algo = algorithm_class(cfg.algorithm)(cfg, workers=2, local_workers=[0, 1],
                                          steps_per_epoch=total_steps, total_steps=total_steps,
                                          backend="packed")
    algo.start(fm)
    return algo


def drive(fm, comm, algo, loop: LoopState, until: int, runs=None, c=C) -> None:
    """Local steps until `until`; `runs`: [(algorithm, comm view)] of a packed sweep."""
    runs = runs or [(algo, comm)]
    c = c.repeat(fm.replicas // 2)                     # worker i of every run: target c_i
    r = fm.replicas
    while loop.step < until:
        with torch.no_grad():
            w, b, m = fm.flat[0:r], fm.flat[r:2 * r], fm.flat[2 * r:]   # [params|stats|momentum]
            w.sub_(0.5 * (w - c))
            b.sub_(0.5 * (b - 10 * c))
            m.sub_(0.5 * (m - 100 * c))
        loop.advance(None)
        for a, view in runs:                           # as core/loop.py's _rounds
            a.on_step(loop, fm, view)
            for ev in a.events(loop, 0.0):
                a.on_round(ev, fm, view)


def run(flags: list[str], steps: int = 7, c=C, x0=None):
    """`x0`: the [w | b | m] every worker starts from (default zeros)."""
    fm, comm, algo = setup(flags, steps)
    if x0 is not None:
        with torch.no_grad():
            fm.flat.copy_(x0.repeat_interleave(2))
    drive(fm, comm, algo, LoopState(worker_step_counts=[0, 0]), steps, c=c)
    return fm, comm, algo


def test_hand_computed_two_workers():
    """I = 3, TAU = 2, 7 steps. w after steps 1-3: (0, 2), (0, 3), (0, 3.5); the round at step 3
    snapshots (0, 3.5), average 1.75. Steps 4, 5: w1 = 3.75, 3.875; applied after step 5:
    w = 1.75 + (w - s) = (1.75, 1.75 + 0.375) = (1.75, 2.125). Step 6: (0.875, 3.0625), round:
    average 1.96875, due at step 8 > 7, so applied at the last step: step 7 makes
    (0.4375, 3.53125), then w = 1.96875 + (-0.4375, 0.46875) = (1.53125, 2.4375).
    The statistic follows the same rule on 10 x the numbers."""
    fm, comm, algo = run(["--interval", "3", "--overlap-delay", "2"])
    want = torch.tensor([1.53125, 2.4375], dtype=torch.float64)
    assert torch.equal(fm.flat[0:2], want)
    assert torch.equal(fm.flat[2:4], 10 * want)          # BN statistics: the same delayed rule
    assert not algo.overlap.pending                      # the last round was applied at step 7
    assert comm.counters.rounds["global"] == 2
    assert comm.counters.bytes["global"] == 2 * 2 * 8    # 2 rounds of (w, b) of one worker, fp64
    # Not Algorithm 1: averaging at once ends elsewhere.
    a1, _, _ = run(["--interval", "3"])
    assert float((a1.flat[:4] - fm.flat[:4]).abs().max()) > 0.1


def test_momentum_follows_the_delayed_rule_with_average_momentum():
    want = torch.tensor([1.53125, 2.4375], dtype=torch.float64)   # as above
    fm, comm, _ = run(["--interval", "3", "--overlap-delay", "2", "--average-momentum", "true"])
    assert torch.equal(fm.flat[4:6], 100 * want)
    assert comm.counters.bytes["global"] == 2 * 3 * 8    # 2 rounds of (w, b, m) of one worker
    fm, _, _ = run(["--interval", "3", "--overlap-delay", "2"])
    assert torch.equal(fm.flat[4:6], 100 * torch.tensor([0.0, 4 * 127 / 128],
                                                        dtype=torch.float64))   # never averaged


def test_round_is_applied_tau_steps_later_not_before():
    fm, comm, algo = setup(["--interval", "3", "--overlap-delay", "2"], 10)
    loop = LoopState(worker_step_counts=[0, 0])
    drive(fm, comm, algo, loop, 4)                   # round started at 3, due at 5
    assert algo.overlap.pending and algo.overlap.apply_at == 5
    assert comm.counters.rounds["global"] == 0       # counted when waited for, at the apply
    assert float(fm.flat[0]) == 0.0                  # worker 0 has not seen the average yet
    drive(fm, comm, algo, loop, 5)
    assert not algo.overlap.pending and comm.counters.rounds["global"] == 1
    assert float(fm.flat[0]) == 1.75


def test_delay_zero_is_algorithm_1_bitwise():
    """--overlap-delay 0 is Algorithm 1's own code path; and the delayed rule itself with TAU = 0
    gives the in-place average bit for bit (x - s is exactly 0)."""
    plain, _, _ = run(["--interval", "3"])
    zero, _, algo = run(["--interval", "3", "--overlap-delay", "0"])
    assert algo.overlap is None and torch.equal(plain.flat, zero.flat)

    torch.manual_seed(0)
    fm, comm, _ = setup(["--interval", "3"], 1)
    with torch.no_grad():
        fm.flat.copy_(torch.randn_like(fm.flat) / 3)
    ref = fm.flat.clone()
    comm.average_(ref[:4], EVERYONE)                 # Algorithm 1's round on a copy
    r = DelayedRound(0, last_step=10)
    r.start(4, EVERYONE, fm.state, comm)
    assert r.apply_due(4, fm.state, comm)
    assert torch.equal(fm.flat, ref)


def test_resume_with_a_round_in_flight_is_bit_identical():
    whole, whole_comm, _ = run(["--interval", "3", "--overlap-delay", "2"])
    flags = ["--interval", "3", "--overlap-delay", "2"]
    fm, comm, algo = setup(flags, 7)
    loop = LoopState(worker_step_counts=[0, 0])
    drive(fm, comm, algo, loop, 4)                   # the round of step 3 is in flight
    saved = {"algo": algo.state_dict(), "flat": fm.state_dict(), "loop": loop.state_dict(),
             "counters": comm.counters.state_dict()}
    assert saved["algo"]["overlap"]["pending"]
    fm2, comm2, algo2 = setup(flags, 7)
    fm2.load_state_dict(saved["flat"])
    algo2.load_state_dict(saved["algo"])
    comm2.counters.load_state_dict(saved["counters"])
    loop2 = LoopState(worker_step_counts=[0, 0])
    loop2.load_state_dict(saved["loop"])
    drive(fm2, comm2, algo2, loop2, 7)
    assert torch.equal(fm2.flat, whole.flat)
    assert comm2.counters.rounds == whole_comm.counters.rounds
    # Not vacuous: a resume that lost the pending round ends elsewhere.
    fm3, comm3, algo3 = setup(flags, 7)
    fm3.load_state_dict(saved["flat"])
    loop3 = LoopState(worker_step_counts=[0, 0])
    loop3.load_state_dict(saved["loop"])
    drive(fm3, comm3, algo3, loop3, 7)
    assert float((fm3.flat - whole.flat).abs().max()) > 0.1


def test_a_packed_sweep_equals_its_separate_runs_bitwise():
    """--intervals 3,4 --overlap-delay 2: two runs of 2 workers packed as 4 replicas; each run's
    rounds (started and applied at different steps) touch only its own rows. Numbers that are
    far from dyadic and far from their targets (x changes by more than 2x, even its sign,
    between a snapshot and its apply), so (x - s) + s != x: an apply over another run's rows,
    where avg(s) = s, would show."""
    c = torch.tensor([0.1, 3.7], dtype=torch.float64)
    x0 = torch.tensor([-100.3, -1000.7, -10000.9], dtype=torch.float64)
    cfg = config_mod.from_args(["--preset", "smoke", "--dataset", "synthetic", "--backend",
                                "packed", "--workers", "2", "--intervals", "3,4",
                                "--overlap-delay", "2"])
    cfg.validate()
    from prsgd.core.build import run_configs
    fm = FlatModel(Toy(4), 4)
    with torch.no_grad():
        fm.flat.copy_(x0.repeat_interleave(4))
    comm = PackedComm(fm, 2, runs=2)
    runs = [(make_algorithm(c, fm, 7), comm.view(k)) for k, c in enumerate(run_configs(cfg))]
    drive(fm, comm, None, LoopState(worker_step_counts=[0, 0]), 7, runs=runs, c=c)
    packed = fm.flat.view(3, 2, 2)                     # [w | b | m] x run x worker
    for k, interval in enumerate((3, 4)):
        alone, comm_alone, _ = run(["--interval", str(interval), "--overlap-delay", "2"], c=c,
                                   x0=x0)
        assert torch.equal(packed[:, k].reshape(-1), alone.flat), f"I={interval}"
        assert comm.view(k).counters.rounds == comm_alone.counters.rounds
    assert not torch.equal(packed[:, 0], packed[:, 1])   # the two runs did differ


def test_two_rounds_in_flight_are_refused():
    fm, comm, _ = setup(["--interval", "3"], 10)
    r = DelayedRound(2, last_step=10)
    r.start(3, EVERYONE, fm.state, comm)
    with pytest.raises(RuntimeError, match="still pending"):
        r.start(4, EVERYONE, fm.state, comm)


@pytest.mark.parametrize("flags, match", [
    (["--overlap-delay", "-1"], "--overlap-delay: must be >= 0"),
    (["--interval", "4", "--overlap-delay", "4"], "--overlap-delay: must be < --interval 4"),
    (["--interval", "4", "--overlap-delay", "1", "--diagnostics"], "not with --diagnostics"),
    (["--intervals", "8,2", "--overlap-delay", "2"], "must be < every --intervals I 2"),
    (["--algorithm", "hier", "--overlap-delay", "1"], "applies only to --algorithm prsgd or kavg"),
])
def test_bad_delays_are_refused(flags, match):
    with pytest.raises(config_mod.ConfigError, match=match):
        config_mod.from_args(["--preset", "smoke", "--backend", "packed", "--workers", "2",
                              *flags]).validate()


def test_kavg_takes_the_delay_too():
    k, _, _ = run(["--algorithm", "kavg", "--interval", "3", "--overlap-delay", "2"])
    p, _, _ = run(["--interval", "3", "--overlap-delay", "2"])
    assert torch.equal(k.flat, p.flat)
    cls = algorithm_class("kavg")
    assert cls.label({"interval": 3, "overlap_delay": 2}) == "K-AVG K=3 overlap=2"
    assert algorithm_class("prsgd").short_label({"interval": 3, "overlap_delay": 0}) == "I=3"


def test_clock_costs_only_what_the_steps_do_not_hide():
    """A round behind TAU local steps costs max(0, round seconds - TAU x step seconds)."""
    from conftest import toy_clock
    cal, payload = toy_clock(step=0.05), 4e7
    round_s = cal.round_seconds(((0, 1, 2, 3),), payload)
    per = cal.step_seconds(4)[0]
    assert 3 * per < round_s < 1000 * per   # TAU = 3 hides part of a round, 1000 all of it
    for tau in (0, 1, 3, 1000):
        shape = RunShape(workers=4, payload_bytes=payload,
                         **algorithm_class("prsgd").clock_shape({"overlap_delay": tau}, 4))
        m = model_counts(cal, shape, steps=40, rounds=10)
        assert m["comm_global_s"] == pytest.approx(10 * max(0.0, round_s - tau * per))
        assert m["seconds"] == pytest.approx(40 * per + m["comm_global_s"])
