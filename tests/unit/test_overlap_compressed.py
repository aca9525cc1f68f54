"""The delayed compressed round (`--overlap-delay TAU --compressor C`,
src/prsgd/algorithms/overlap_compressed.py) in process, on the packed backend.

A toy packed model (tests/unit/test_compressed_round.py's: two parameter tensors and a BN-like
statistic per replica, random fp64 values); "local steps" are random drifts. The expected values
are computed here independently, from the compressors' roundtrip and the delayed rule
x_i <- (x_i - s_i) + x̄ + mean_j D(C(s_j - x̄)). Real training runs and real ranks:
tests/integration/test_overlap_compressed.py.
"""
from __future__ import annotations

import pytest
import torch

from prsgd.algorithms import algorithm_class
from prsgd.algorithms.overlap_compressed import DelayedCompressedRound
from prsgd.backends.base import Comm
from prsgd.backends.packed import PackedComm
from prsgd.clock.model import RunShape, model_counts
from prsgd.compress import make_compressor
from prsgd.core import config as config_mod
from prsgd.core.schedule import GLOBAL, Event, all_workers
from unit.test_compressed_round import drift, make, toy
from unit.test_diloco import BASE, PACKED

N = 3
EV = Event(GLOBAL, all_workers(N))
LOSSY = [("int8", {}), ("topk", {"ratio": 0.02}), ("fp16", {})]


def params(fm, rows=slice(None)):
    return fm.rows(fm.param_segments, rows)


def stats(fm, rows=slice(None)):
    return fm.rows(fm.stat_segments, rows)


@pytest.mark.parametrize("name, kw", LOSSY)
def test_delay_zero_equals_the_synchronous_compressed_round_bitwise(name, kw):
    """Started and applied at the same step, the delayed round is the synchronous one, bit for
    bit (x - s is exactly 0), for three rounds in a row (reference and residuals carried)."""
    fm, _, g = toy(N)
    twin, _, _ = toy(N)
    comm, twin_comm = PackedComm(fm, N), PackedComm(twin, N)
    sync_rnd, rnd = make(name, twin, N, **kw), make(name, fm, N, **kw)
    delayed = DelayedCompressedRound(0, 100, rnd)
    for step in range(3):
        drift(fm, g)
        with torch.no_grad():
            twin.flat.copy_(fm.flat)
        sync_rnd.run(EV, twin, twin_comm)
        delayed.start(step, EV, fm, comm)
        assert delayed.apply_due(step, fm, comm)
        assert torch.equal(fm.flat, twin.flat)
        assert torch.equal(rnd.reference, sync_rnd.reference)
    assert comm.counters.bytes == twin_comm.counters.bytes
    assert comm.counters.received == twin_comm.counters.received
    assert comm.counters.rounds == twin_comm.counters.rounds == {"global": 3, "local": 0}


def test_delay_zero_in_prsgd_is_the_synchronous_code_path():
    cfg = config_mod.from_args([*BASE, *PACKED, "--compressor", "int8", "--overlap-delay", "0"])
    cfg.validate()
    algo = algorithm_class("prsgd")(cfg, workers=2, local_workers=[0, 1], steps_per_epoch=4,
                                    total_steps=8, backend="packed")
    fm, _, _ = toy(2)
    algo.start(fm)
    assert algo.overlap is None and algo.compressed is not None


@pytest.mark.parametrize("name, kw", LOSSY)
def test_apply_is_the_average_of_the_sent_payloads_plus_local_progress(name, kw):
    fm, x0, g = toy(N)
    comm = PackedComm(fm, N)
    rnd = make(name, fm, N, **kw)                          # reference x0
    delayed = DelayedCompressedRound(2, 100, rnd)
    drift(fm, g)
    s, b = params(fm), stats(fm)                           # the snapshot at the round's step
    c = make_compressor(name, **kw)
    sent = [c.roundtrip(s[i] - x0).to(torch.float64) for i in range(N)]
    delayed.start(3, EV, fm, comm)
    for i in range(N):                                     # error feedback: updated at send
        assert torch.equal(rnd.feedback[i].residual, (s[i] - x0) - sent[i])
    assert delayed.apply_at == 5 and not delayed.apply_due(4, fm, comm)
    assert comm.counters.rounds["global"] == 0             # counted at the wait
    drift(fm, g)
    drift(fm, g)                                           # two local steps in flight
    x, bx = params(fm), stats(fm)
    assert delayed.apply_due(5, fm, comm)
    if c.collective == "allgather":                        # decoded in worker order
        a = x0 + (sent[0] + sent[1] + sent[2]) / N
    else:                                                  # summed in fp16 by the collective
        a = x0 + torch.stack([(s[i] - x0).half() for i in range(N)]).mean(0).double()
    assert torch.equal(params(fm), (x - s) + a)
    assert torch.equal(stats(fm), (bx - b) + b.mean(0, keepdim=True))   # statistics exact
    assert torch.equal(rnd.reference, a) and not delayed.pending
    assert comm.counters.rounds["global"] == 1
    # Not vacuous: the workers kept their own progress (they differ), and the apply is not the
    # synchronous round on x(t + TAU).
    assert float((params(fm)[0] - params(fm)[1]).abs().max()) > 1e-3


def test_a_packed_sweep_run_touches_its_own_rows_only():
    """Run 1 of a packed sweep of 2 runs: run 0's rows keep every bit (where avg(s) = s,
    (x - s) + s need not be x in floating point), run 1's take the round."""
    n = 2
    fm, _, g = toy(n, runs=2)
    drift(fm, g)
    comm = PackedComm(fm, n, runs=2)
    view = comm.view(1)
    delayed = DelayedCompressedRound(1, 100, make("int8", fm, n))
    delayed.start(1, Event(GLOBAL, all_workers(n)), fm, view)
    drift(fm, g)
    run0 = [params(fm, slice(0, 2)), stats(fm, slice(0, 2))]
    run1 = params(fm, slice(2, 4))
    assert delayed.apply_due(2, fm, view)
    assert torch.equal(params(fm, slice(0, 2)), run0[0])
    assert torch.equal(stats(fm, slice(0, 2)), run0[1])
    assert float((params(fm, slice(2, 4)) - run1).abs().max()) > 1e-3
    assert view.counters.rounds["global"] == 1 and comm.counters.rounds["global"] == 0


@pytest.mark.parametrize("name, kw", [("topk", {"ratio": 0.02}), ("fp16", {})])
def test_resume_inside_the_window_is_bit_identical(name, kw):
    def fresh():
        fm, _, g = toy(N, seed=5)
        rnd = make(name, fm, N, **kw)
        return fm, g, PackedComm(fm, N), rnd, DelayedCompressedRound(2, 100, rnd)

    def steps(fm, g, comm, delayed, lo, hi):
        for step in range(lo, hi):                          # rounds at 0, 3, 6; applied +2
            drift(fm, g)
            delayed.apply_due(step, fm, comm)
            if step % 3 == 0:
                delayed.start(step, EV, fm, comm)

    fm, g, comm, rnd, delayed = fresh()
    steps(fm, g, comm, delayed, 0, 9)
    whole = fm.flat.clone()

    fm, g, comm, rnd, delayed = fresh()
    steps(fm, g, comm, delayed, 0, 4)                       # the round of step 3 in flight
    saved = {"flat": fm.flat.clone(), "rnd": rnd.state_dict(), "over": delayed.state_dict(),
             "gen": g.get_state()}
    assert saved["over"]["pending"] and saved["over"]["apply_at"] == 5

    def resume(drop_pending: bool):
        fm2, g2, comm2, rnd2, delayed2 = fresh()
        with torch.no_grad():
            fm2.flat.copy_(saved["flat"])
        g2.set_state(saved["gen"])
        rnd2.load_state_dict(saved["rnd"])
        delayed2.load_state_dict({"pending": False} if drop_pending else saved["over"], fm2)
        steps(fm2, g2, comm2, delayed2, 4, 9)
        return fm2.flat

    assert torch.equal(resume(False), whole)
    assert float((resume(True) - whole).abs().max()) > 1e-5   # the pending round matters


def test_the_combination_is_accepted_and_builds_the_delayed_compressed_round():
    cfg = config_mod.from_args([*BASE, *PACKED, "--compressor", "int8", "--interval", "3",
                                "--overlap-delay", "2"])
    cfg.validate()
    algo = algorithm_class("prsgd")(cfg, workers=2, local_workers=[0, 1], steps_per_epoch=4,
                                    total_steps=8, backend="packed")
    fm, _, _ = toy(2)
    algo.start(fm)
    assert isinstance(algo.overlap, DelayedCompressedRound) and algo.overlap.rnd is algo.compressed


def test_the_base_comm_defaults_are_synchronous_and_correct():
    """A backend without asynchronous collectives: start does nothing, the wait runs the
    synchronous collective (here on the packed backend's own arithmetic)."""
    fm, _, g = toy(N)
    comm = PackedComm(fm, N)
    t = torch.randn(N, 7, generator=g, dtype=torch.float64)
    want = t.mean(0, keepdim=True).expand_as(t)
    h = Comm.average_rows_start(comm, t, EV)
    assert not torch.equal(t, want)
    Comm.average_rows_wait(comm, h)
    assert torch.equal(t, want)
    h = Comm.gather_start(comm, t)
    assert Comm.gather_wait(comm, h) is Comm.gather_wait(comm, h)


def test_clock_costs_a_compressed_overlapped_round_minus_the_hidden_steps():
    from conftest import toy_clock
    cal = toy_clock(step=0.05)
    parts = (("allgather", 2e7), ("allreduce", 1e5))
    round_s = cal.round_seconds(((0, 1, 2, 3),), 4e7, parts)
    per = cal.step_seconds(4)[0]
    assert 3 * per < round_s < 1000 * per
    assert round_s != pytest.approx(cal.round_seconds(((0, 1, 2, 3),), 4e7))   # not fp32's
    for tau in (0, 1, 3, 1000):
        shape = RunShape(workers=4, payload_bytes=4e7, collectives=parts, overlap_steps=tau)
        m = model_counts(cal, shape, steps=40, rounds=10)
        assert m["comm_global_s"] == pytest.approx(10 * max(0.0, round_s - tau * per))
