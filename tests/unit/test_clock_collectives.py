"""The clock's per-collective costs (prsgd.clock.collectives, .model), compressed rounds costed from their
payload, and where the clock's rounds come from (prsgd.clock.rounds): replayed schedules, or a
measured run's metrics.csv for an algorithm whose rounds depend on the run (AdaComm).
Pure arithmetic against hand-computed values; no timing."""

import pandas as pd
import pytest

from conftest import toy_clock
from prsgd.algorithms import algorithm_class
from prsgd.clock.collectives import (Link, ring_allgather_seconds, ring_allreduce_seconds,
                                     ring_reduce_scatter_seconds)
from prsgd.clock.model import CalibrationError, RunShape, model_counts, model_run
from prsgd.clock.rounds import epoch_rounds, model_epochs
from prsgd.core.config import preset

INTER = 1e-3 + 6e-4 + 1.5e-2     # toy_clock: one 1 MB allreduce over 4 ranks on 2 nodes


def test_each_collective_by_hand():
    # n = 4, alpha 100 us, 100 MB/s
    assert ring_allreduce_seconds(4, 1e6, 1e-4, 1e8) == pytest.approx(6e-4 + 1.5e-2)
    # reduce-scatter: 3 steps, each 1/4 of 1 MB: 3e-4 + 3/4 x 0.01
    assert ring_reduce_scatter_seconds(4, 1e6, 1e-4, 1e8) == pytest.approx(3e-4 + 7.5e-3)
    # allgather of 100 kB per worker: 3 steps, each passes one 100 kB payload: 3e-4 + 3 x 1e-3
    assert ring_allgather_seconds(4, 1e5, 1e-4, 1e8) == pytest.approx(3e-4 + 3e-3)
    # an allreduce is a reduce-scatter of S + an allgather of the S/n pieces
    for n in (2, 3, 8):
        assert ring_allreduce_seconds(n, 1e6, 2e-5, 3e8) == pytest.approx(
            ring_reduce_scatter_seconds(n, 1e6, 2e-5, 3e8)
            + ring_allgather_seconds(n, 1e6 / n, 2e-5, 3e8))
    for f in (ring_allreduce_seconds, ring_reduce_scatter_seconds, ring_allgather_seconds):
        assert f(1, 1e6, 1.0, 1.0) == 0.0                  # one worker sends nothing
    link = Link(1e-4, 1e8)
    assert link.seconds("allgather", 4, 1e5) == pytest.approx(3e-4 + 3e-3)
    assert link.seconds("allreduce", 8, 8e6) == link.ring_seconds(8, 8e6)
    with pytest.raises(CalibrationError, match="no cost model for the collective 'alltoall'"):
        link.seconds("alltoall", 4, 1.0)
    # the calibration adds its per-collective overhead (1 ms) and picks the link by the group
    c = toy_clock()
    assert c.collective_seconds((0, 1, 2, 3), 1e5, "allgather") == pytest.approx(
        1e-3 + 3e-4 + 3e-3)
    assert c.collective_seconds((0, 1), 1e6, "reduce_scatter") == pytest.approx(
        1e-3 + 1e-5 + 0.5 * 1e6 / 1e9)


def meta_of(**cfg) -> dict:
    """config.json of a 4-worker ResNet-sized run: P = 10,240 params + 1,000 BN floats."""
    return {"config": {"algorithm": "prsgd", "interval": 4, "precision": "fp32", **cfg},
            "derived": {"workers": 4, "averaged_floats": 11_240, "param_floats": 10_240,
                        "steps_per_epoch": 8, "total_steps": 24}}


@pytest.mark.parametrize("compressor, ratio, collective, payload", [
    ("fp16", None, "allreduce", 2 * 10_240),
    ("bf16", None, "allreduce", 2 * 10_240),
    ("int8", None, "allgather", 10_240 + 10 * 4),          # 1 B each + an fp32 scale per 1,024
    ("topk", 0.01, "allgather", 103 * 8),                  # k = ceil(102.4): value + int32 index
])
def test_a_compressed_round_is_costed_from_its_payload(compressor, ratio, collective, payload):
    c = toy_clock()
    shape = RunShape.from_config(meta_of(compressor=compressor, topk_ratio=ratio))
    assert shape.collectives == ((collective, payload), ("allreduce", 1000 * 4))
    link = c.links["inter"]
    by_hand = (1e-3 + link.seconds(collective, 4, payload)          # the parameters' payload
               + 1e-3 + ring_allreduce_seconds(4, 4000, 1e-4, 1e8))  # BN statistics, exact
    m = model_counts(c, shape, 24, 6, bytes_global=6 * 44_960.0)     # counters are not read
    assert m["comm_global_s"] == pytest.approx(6 * by_hand)
    assert m["seconds"] == pytest.approx(24 * 0.1 + 6 * by_hand)
    # (at these 45 kB the second collective's 1 ms overhead outweighs the bytes saved: the
    # model charges every collective its overhead, so compression pays only on large buffers)
    assert by_hand > 1e-3 + ring_allreduce_seconds(4, 44_960, 1e-4, 1e8)


def test_uncompressed_runs_are_costed_as_before():
    c = toy_clock()
    for cfg in ({}, {"compressor": "none", "topk_ratio": 0.01}):
        shape = RunShape.from_config(meta_of(**cfg))
        assert shape.collectives == ()
        m = model_counts(c, shape, 24, 6, bytes_global=6 * 1e6)      # 1 MB per round, counted
        assert m["comm_global_s"] == pytest.approx(6 * INTER)


def test_a_compressed_run_without_what_it_needs_is_refused():
    meta = meta_of(compressor="int8")
    del meta["derived"]["param_floats"]
    with pytest.raises(CalibrationError, match="needs derived.param_floats"):
        RunShape.from_config(meta)
    with pytest.raises(CalibrationError, match="compressor 'zip'"):
        RunShape.from_config(meta_of(compressor="zip"))
    with pytest.raises(CalibrationError, match="topk: ratio must be in"):
        RunShape.from_config(meta_of(compressor="topk", topk_ratio=0))


def full_meta(algorithm: str, **cfg) -> dict:
    """config.json as the trainer writes it (every field), 2 workers, 8 steps x 3 epochs."""
    config = preset("smoke", algorithm=algorithm, **cfg).to_dict()
    return {"config": config, "derived": {"workers": 2, "averaged_floats": 250_000,
                                          "steps_per_epoch": 8, "total_steps": 24}}


def measured(rounds: list[int]) -> pd.DataFrame:
    return pd.DataFrame([{"epoch": e + 1, "step": 8 * (e + 1), "rounds": r, "rounds_local": 0,
                          "bytes": r * 1e6, "bytes_local": 0} for e, r in enumerate(rounds)])


def test_fixed_schedules_are_replayed_adaptive_ones_counted_from_the_run():
    # Algorithm 1, I = 3, 8 steps per epoch: rounds at 3, 6 | 9, 12, 15 | 18, 21, 24
    rows = epoch_rounds(full_meta("prsgd", interval=3))
    assert [(r["step"], r["rounds"]) for r in rows] == [(8, 2), (16, 5), (24, 8)]
    hier = epoch_rounds(full_meta("hier", interval=2, group_size=1, global_every=2))
    assert [(r["rounds"], r["rounds_local"]) for r in hier] == [(2, 2), (4, 4), (6, 6)]
    # AdaComm's rounds follow the loss: only a measured run can say how many
    ada = full_meta("adacomm", interval=3)
    with pytest.raises(CalibrationError, match="adacomm: its rounds depend on the run"):
        epoch_rounds(ada)
    assert [r["rounds"] for r in epoch_rounds(ada, measured([3, 7, 12]))] == [3, 7, 12]
    # ... and the modelled seconds cost exactly those rounds
    c = toy_clock(step=0.1)
    m = model_epochs(c, ada, measured([3, 7, 12]))
    one = 1e-3 + 2e-5 + 1e-3                       # 2 ranks on one node: 1 MB at 1 GB/s
    assert [r["seconds"] for r in m] == pytest.approx(
        [0.8 + 3 * one, 1.6 + 7 * one, 2.4 + 12 * one])
    # the measured path (model_run) agrees with it for the same rows
    assert list(model_run(c, ada, measured([3, 7, 12]))["model_seconds"]) == pytest.approx(
        [r["seconds"] for r in m])


def test_the_class_attribute_decides_not_the_name(monkeypatch):
    """Any algorithm that says its rounds depend on the run is counted from its metrics."""
    meta = full_meta("prsgd", interval=4)
    assert [r["rounds"] for r in epoch_rounds(meta, measured([9, 9, 9]))] == [2, 4, 6]
    monkeypatch.setattr(algorithm_class("prsgd"), "rounds_from_run", True)
    assert [r["rounds"] for r in epoch_rounds(meta, measured([9, 9, 9]))] == [9, 9, 9]
