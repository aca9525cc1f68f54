"""The compressed round (algorithms/compressed.py) on the packed backend, in process, no training:
a toy packed model whose replicas are set by hand, rounds made by the real round and Comm.

- the identity through the round equals the plain average (Algorithm 1's round) to 1e-12 in fp64;
- a lossy round (int8, top-k, fp16) gives every worker x̄ + mean_j D(C(delta_j)), computed here
  independently with the compressor's roundtrip, bit for bit; BN statistics are the exact mean;
- error feedback keeps each worker's own residual delta - D(C(delta));
- a packed sweep's run touches its own replicas only;
- bad values of the flags get one-line errors; Counters read checkpoints from before issue 19.
The training runs (Algorithm 1 equality, bytes in metrics.csv, resume, horovodrun) are in
tests/integration/test_compressed.py.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from prsgd.algorithms.compressed import CompressedRound
from prsgd.backends.base import Counters
from prsgd.backends.horovod import HorovodComm
from prsgd.backends.packed import PackedComm
from prsgd.compress import make_compressor
from prsgd.core import config as config_mod
from prsgd.core.flat import FlatModel
from prsgd.core.schedule import GLOBAL, Event, all_workers
from unit.test_diloco import BASE, PACKED

P1, P2, S = 3000, 700, 40   # two parameter tensors and one BN-like statistic, per replica


class Toy(nn.Module):
    """n packed replicas: each tensor's first axis is the replica."""

    def __init__(self, n: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, P1, dtype=torch.float64))
        self.v = nn.Parameter(torch.zeros(n, P2, dtype=torch.float64))
        self.register_buffer("running_var", torch.zeros(n, S, dtype=torch.float64))


def toy(n: int, runs: int = 1, seed: int = 0):
    """A packed flat model of `runs` x `n` replicas that start equal (x0)."""
    g = torch.Generator().manual_seed(seed)
    fm = FlatModel(Toy(n * runs), n * runs)
    x0 = torch.randn(P1 + P2, generator=g, dtype=torch.float64)
    fm.set_rows_(fm.param_segments, slice(None), x0)
    return fm, x0, g


def drift(fm, g, scale=0.1):
    """Local steps, as far as a round can tell: every replica's params and stats move."""
    with torch.no_grad():
        fm.state.add_(scale * torch.randn(fm.state.numel(), generator=g, dtype=torch.float64))


def make(name, fm, n, ef=True, **kw):
    r = CompressedRound(make_compressor(name, **kw), ef, n)
    r.start(fm)
    return r


def test_identity_round_equals_the_plain_average():
    n = 3
    fm, _, g = toy(n)
    plain = FlatModel(Toy(n), n)
    comm, plain_comm = PackedComm(fm, n), PackedComm(plain, n)
    rnd, ev = make("none", fm, n), Event(GLOBAL, all_workers(n))
    for _ in range(5):
        drift(fm, g)
        with torch.no_grad():
            plain.flat.copy_(fm.flat)
        rnd.run(ev, fm, comm)
        plain_comm.average_(plain.state, ev)
        assert float((fm.state - plain.state).abs().max()) < 1e-12 * float(plain.state.abs().max())
    assert torch.equal(rnd.reference, fm.rows(fm.param_segments, slice(0, 1))[0])
    assert comm.counters.to_dict() == plain_comm.counters.to_dict() | {
        "seconds": comm.counters.seconds}          # the same bytes: the fp64 model, allreduced


@pytest.mark.parametrize("name, kw", [("int8", {}), ("topk", {"ratio": 0.02}), ("fp16", {})])
def test_lossy_round_is_reference_plus_mean_of_decoded_deltas(name, kw):
    n = 3
    fm, x0, g = toy(n)
    comm, ev = PackedComm(fm, n), Event(GLOBAL, all_workers(n))
    rnd = make(name, fm, n, **kw)                         # the reference: x0
    drift(fm, g)
    x = fm.rows(fm.param_segments, slice(None))
    stats = fm.rows(fm.stat_segments, slice(None))
    c = make_compressor(name, **kw)
    sent = [c.roundtrip(x[i] - x0).to(torch.float64) for i in range(n)]
    rnd.run(ev, fm, comm)
    after = fm.rows(fm.param_segments, slice(None))
    for i in range(n):
        assert torch.equal(after[i], after[0])            # every worker: the same bits
    if c.collective == "allgather":                       # decoded and summed in worker order
        assert torch.equal(after[0], x0 + (sent[0] + sent[1] + sent[2]) / n)
    else:                                                 # averaged in fp16 by the collective
        mean = torch.stack([(x[i] - x0).half() for i in range(n)]).mean(0).double()
        assert torch.equal(after[0], x0 + mean)
    assert float((after[0] - x.mean(0)).abs().max()) > 1e-6   # lossy: not the plain average
    assert torch.equal(fm.rows(fm.stat_segments, slice(None)),
                       stats.mean(0, keepdim=True).expand_as(stats))   # statistics: exact
    for i in range(n):                                    # error feedback: each its own
        assert torch.equal(rnd.feedback[i].residual, (x[i] - x0) - sent[i])
    # bytes: one worker's payload + the fp64 statistics sent; received per the collective
    payload = {"int8": (P1 + P2) + 4 * math.ceil((P1 + P2) / 1024),
               "topk": 8 * math.ceil(0.02 * (P1 + P2)), "fp16": 2 * (P1 + P2)}[name]
    got = payload if name == "fp16" else (n - 1) * payload
    assert comm.counters.bytes["global"] == payload + 8 * S
    assert comm.counters.received["global"] == got + 8 * S
    assert comm.counters.collective_bytes[c.collective] == payload + \
        (8 * S if c.collective == "allreduce" else 0)
    assert comm.counters.rounds["global"] == 1


def test_without_error_feedback_nothing_is_kept_and_the_result_differs():
    n, results = 2, []
    for ef in (True, False):
        fm, _, g = toy(n, seed=4)
        comm, ev = PackedComm(fm, n), Event(GLOBAL, all_workers(n))
        rnd = make("topk", fm, n, ef=ef, ratio=0.01)
        for _ in range(3):
            drift(fm, g)
            rnd.run(ev, fm, comm)
        results.append(fm.params.clone())
        assert (rnd.feedback is None) == (not ef)
        assert (rnd.state_dict()["residuals"] is None) == (not ef)
    assert not torch.equal(*results)


def test_a_packed_sweep_run_rounds_its_own_replicas_only():
    n = 2
    fm, _, g = toy(n, runs=2)
    drift(fm, g)
    first = fm.rows(fm.param_segments, slice(0, 2))
    comm = PackedComm(fm, n, runs=2)
    view = comm.view(1)
    assert view.replica_rows() == slice(2, 4) and comm.replica_rows() == slice(0, 2)
    make("int8", fm, n).run(Event(GLOBAL, all_workers(n)), fm, view)
    rows = fm.rows(fm.param_segments, slice(None))
    assert torch.equal(rows[:2], first)                   # run 0 untouched
    assert torch.equal(rows[2], rows[3])
    assert view.counters.rounds["global"] == 1 and comm.counters.rounds["global"] == 0


def test_state_round_trips_through_the_checkpoint_protocol():
    n = 2
    fm, _, g = toy(n)
    comm, ev = PackedComm(fm, n), Event(GLOBAL, all_workers(n))
    a = make("topk", fm, n, ratio=0.01)
    drift(fm, g)
    a.run(ev, fm, comm)
    b = make("topk", fm, n, ratio=0.01)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.reference, b.reference)
    assert all(torch.equal(x.residual, y.residual) for x, y in zip(a.feedback, b.feedback))
    assert float(a.feedback[0].residual.abs().max()) > 0


def test_counters_load_checkpoints_from_before_received_bytes():
    """A checkpoint made before issue 19 holds rounds, bytes and seconds only: every round then
    was one allreduce, which returns what it sends."""
    c = Counters()
    c.load({"rounds": {"global": 3, "local": 1}, "bytes": {"global": 300, "local": 40},
            "seconds": {"global": 1.0, "local": 0.5}})
    assert c.received == {"global": 300, "local": 40}
    assert c.collective_bytes == {"allreduce": 340, "allgather": 0}
    c.add("global", 10, 0.1, received=20, collectives={"allgather": 6, "allreduce": 4})
    assert (c.total("bytes"), c.total("received"), c.collective_bytes) == \
        (350, 360, {"allreduce": 344, "allgather": 6})


@pytest.mark.parametrize("args, message", [
    (["--compressor", "zip"], "--compressor: must be one of none, fp16, bf16, int8, topk"),
    (["--compressor", "topk", "--topk-ratio", "0"], "--topk-ratio: must be in (0, 1]"),
    (["--compressor", "topk", "--topk-ratio", "1.5"], "--topk-ratio: must be in (0, 1]"),
    (["--compressor", "topk", "--topk-ratio", "-0.1"], "--topk-ratio: must be in (0, 1]"),
    (["--compressor", "int8", "--topk-ratio", "0.1"],
     "--topk-ratio: applies only to --compressor topk, not int8"),
    (["--topk-ratio", "0.1"], "--topk-ratio: applies only to --compressor topk, not none"),
    (["--compressor", "int8", "--algorithm", "hetero"],
     "--compressor: compresses the model averages of --algorithm prsgd"),
    (["--compressor", "fp16", "--algorithm", "hier", "--group-size", "1"],
     "not --algorithm hier"),
    (["--compressor", "int8", "--average-momentum"], "--average-momentum: not with --compressor"),
    (["--compressor", "int8", "--diagnostics"], "--diagnostics: not with --compressor"),
])
def test_bad_compression_values_are_refused_in_one_line(args, message):
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.from_args([*BASE, *PACKED, *args]).validate()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_horovod_refuses_bf16_it_cannot_allreduce():
    cfg = config_mod.from_args([*BASE, "--compressor", "bf16"])
    with pytest.raises(config_mod.ConfigError, match="--compressor: Horovod has no bfloat16"):
        HorovodComm.validate_config(cfg, 2)
    HorovodComm.validate_config(config_mod.from_args([*BASE, "--compressor", "fp16"]), 2)


def test_plots_label_a_compressed_run_by_its_compressor():
    from prsgd.algorithms import label, short_label
    c = {"algorithm": "prsgd", "interval": 4}
    assert label(c) == label({**c, "compressor": "none"}) == "PR-SGD (Alg 1) I=4"
    assert label({**c, "compressor": "topk", "topk_ratio": 0.05, "error_feedback": False}) == \
        "PR-SGD (Alg 1) I=4, top-0.05 no EF"
    assert short_label({**c, "compressor": "int8"}) == "I=4, int8/1024"


def test_diloco_takes_its_outer_step_from_the_compressed_average():
    """DiLoCo with outer lr 1 and no momentum makes x − (x − a) with a the compressed round's
    average: Algorithm 1's compressed round to rounding, round after round (the reference follows
    the global model); with its default outer optimizer it differs. Its state holds the round's."""
    from prsgd.algorithms import algorithm_class
    n = 2
    ev = Event(GLOBAL, all_workers(n))

    def rounds(*flags):
        cfg = config_mod.from_args([*BASE, *PACKED, "--compressor", "int8", *flags])
        algo = algorithm_class(cfg.algorithm)(cfg, workers=n, local_workers=[0, 1],
                                              steps_per_epoch=4, total_steps=8, backend="packed")
        fm, _, g = toy(n, seed=7)
        comm = PackedComm(fm, n)
        algo.start(fm)
        for _ in range(3):
            drift(fm, g)
            algo.on_round(ev, fm, comm)
        return fm.params.clone(), algo

    a1, _ = rounds()
    plain, d = rounds("--algorithm", "diloco", "--outer-lr", "1", "--outer-momentum", "0")
    assert float((a1 - plain).abs().max()) < 1e-12 * float(a1.abs().max())
    # the reference is the global model the workers share after the outer step
    assert torch.equal(d.compressed.reference, d.fm.rows(d.fm.param_segments, slice(0, 1))[0])
    nesterov, dn = rounds("--algorithm", "diloco")
    assert float((a1 - nesterov).abs().max()) > 1e-3
    state = dn.state_dict()
    assert {"compressed", "copy", "outer_momentum"} <= set(state)
    assert all(float(r.abs().max()) > 0 for r in state["compressed"]["residuals"])


def test_error_feedback_flag_spellings():
    base = [*BASE, *PACKED, "--compressor", "int8"]
    assert config_mod.from_args(base).error_feedback is True
    assert config_mod.from_args([*base, "--error-feedback", "false"]).error_feedback is False
    assert config_mod.from_args([*base, "--no-error-feedback"]).error_feedback is False
    assert config_mod.given_flags([*base, "--no-error-feedback"])["error_feedback"] is False
