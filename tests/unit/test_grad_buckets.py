"""Bucketed gradient allreduce overlapped with backward (gradient_allreduce --bucket-mb): DDP's
bucket assignment, buckets started inside backward in order, the same averages and counters as
the single call (packed backend, in process), the option's rules and the clock's cost.
Real ranks (horovodrun, torchrun): tests/integration/test_grad_buckets.py."""
from __future__ import annotations

import pytest
import torch

from conftest import toy_clock
from prsgd.algorithms import algorithm_class, label
from prsgd.algorithms.grad_buckets import MIB, GradBuckets, assign_buckets
from prsgd.backends.packed import PackedComm
from prsgd.clock.model import (BACKWARD_SHARE, RunShape, model_counts,
                               overlapped_round_seconds)
from prsgd.core.config import ConfigError, from_args, preset
from prsgd.core.flat import FlatModel
from prsgd.core.models import ResNet20
from prsgd.core.schedule import GLOBAL, Event, all_workers

GAR = ["--preset", "smoke", "--algorithm", "gradient_allreduce"]


def test_assignment_is_ddps_reverse_order_closed_at_the_cap():
    sizes = [4, 4, 4, 4, 4]
    assert assign_buckets(sizes, 8) == [[4, 3], [2, 1], [0]]
    assert assign_buckets(sizes, 9) == [[4, 3, 2], [1, 0]]      # closed once >= the cap
    assert assign_buckets(sizes, 1) == [[4], [3], [2], [1], [0]]  # one bucket per parameter
    assert assign_buckets(sizes, 1e9) == [[4, 3, 2, 1, 0]]        # one bucket: no overlap
    assert assign_buckets([1, 100, 1], 50) == [[2, 1], [0]]


def packed_model(seed: int = 0, replicas: int = 2):
    torch.manual_seed(seed)
    fm = FlatModel(ResNet20(replicas=replicas), replicas)
    return fm, PackedComm(fm, replicas)


def test_bucket_slices_tile_the_flat_gradient_in_reverse():
    fm, _ = packed_model()
    b = GradBuckets(fm, cap_mb=0.05)
    assert 1 < len(b) < len(list(fm.model.parameters()))
    his = [hi for _, hi in b.slices]
    assert his[0] == fm.grad.numel() and b.slices[-1][0] == 0
    assert all(lo == hi for (lo, _), (_, hi) in zip(b.slices, b.slices[1:]))  # contiguous
    per_worker = fm.num_params // fm.replicas * 4   # one worker's fp32 gradient
    assert sum(b.bucket_bytes()) == per_worker
    assert all(n >= 0.05 * MIB for n in b.bucket_bytes()[:-1])   # all but the last reach it
    assert len(GradBuckets(fm, cap_mb=1e-9)) == len(list(fm.model.parameters()))


class SpyComm(PackedComm):
    """Packed, logging each started bucket and whether backward had reached the FIRST
    parameter (the last gradient backward makes) when it started."""

    def start_grad_bucket(self, lo, hi):
        first = self.fm.segments[0]
        self.log.append((lo, hi, bool(self.fm.grad[first[0]:first[0] + first[1]].any())))
        return super().start_grad_bucket(lo, hi)


def backward(fm, seed: int):
    torch.manual_seed(seed)
    x = torch.randn(1, 3 * fm.replicas, 32, 32)   # one image: the test is about order
    fm.zero_grad()
    fm.model(x).square().mean().backward()


def test_buckets_start_inside_backward_in_order_and_average_like_one_call():
    fm, _ = packed_model()
    spy = SpyComm(fm, 2)
    spy.log = []
    buckets = GradBuckets(fm, cap_mb=0.05)
    ref, ref_comm = packed_model()
    for step in (1, 2):
        spy.log.clear()
        backward(fm, step)
        backward(ref, step)
        buckets.finish(spy)
        ref_comm.average_(ref.grad, Event(GLOBAL, all_workers(2)))
        assert [(lo, hi) for lo, hi, _ in spy.log] == buckets.slices   # bucket order
        if step == 1:   # the communicator is first known after backward: no overlap yet
            assert all(reached for *_, reached in spy.log)
        else:           # the first bucket left while backward had not reached parameter 0
            assert not spy.log[0][2] and spy.log[-1][2]
        assert torch.equal(fm.grad, ref.grad)
        assert not torch.equal(fm.grad.view(2, -1)[0][:10], torch.zeros(10))
    # Counters: one global round per step, of the whole gradient, as the single call counts.
    assert spy.counters.rounds == ref_comm.counters.rounds == {"global": 2, "local": 0}
    assert spy.counters.bytes == ref_comm.counters.bytes
    assert spy.counters.bytes["global"] == 2 * (fm.num_params // 2) * 4   # 2 steps, fp32


def test_averaging_really_averages_replicas():
    """Guard against a vacuous equality: the two replicas' gradients differ before the round
    and are equal after it."""
    fm, comm = packed_model()
    buckets = GradBuckets(fm, cap_mb=0.05)
    backward(fm, 3)
    rows = [fm.grad[o:o + k].view(2, -1) for o, k in fm.segments[:len(fm.momentum_segments)]]
    assert any(not torch.equal(r[0], r[1]) for r in rows)
    mean = [r.mean(0) for r in rows]
    buckets.finish(comm)
    for r, m in zip(rows, mean):
        assert torch.equal(r[0], r[1]) and torch.equal(r[0], m)


@pytest.mark.parametrize("argv, message", [
    (["--bucket-mb", "-1"], "--bucket-mb: must be a finite number of MiB >= 0"),
    (["--bucket-mb", "inf"], "--bucket-mb"),
    (["--bucket-mb", "nan"], "--bucket-mb"),
])
def test_bad_bucket_sizes_are_refused(argv, message):
    with pytest.raises(ConfigError, match=message):
        from_args([*GAR, *argv]).validate(2)


def test_bucket_option_belongs_to_gradient_allreduce_and_is_not_captured():
    with pytest.raises(ConfigError, match="--bucket-mb: applies only to --algorithm "
                                          "gradient_allreduce"):
        from_args(["--preset", "smoke", "--bucket-mb", "1"]).validate(2)
    with pytest.raises(ConfigError, match="--cuda-graph: not available with --algorithm "
                                          "gradient_allreduce"):
        from_args([*GAR, "--bucket-mb", "1", "--cuda-graph"]).validate(2)
    cfg = from_args([*GAR, "--bucket-mb", "0.25", "--backend", "packed", "--workers", "2"])
    assert cfg.validate().algo.bucket_mb == 0.25       # the packed backend runs it too
    assert label(cfg.to_dict()) == "gradient allreduce, 0.25 MiB buckets"
    assert label(from_args(GAR).to_dict()) == "gradient allreduce"


# --- the clock -------------------------------------------------------------------------------
def test_one_bucket_costs_the_plain_round_and_more_hide_up_to_backward():
    cal, group, nbytes = toy_clock(), (0, 1), 4e6     # intra link: 1 GB/s, 10 us, 1 ms overhead
    plain = cal.collective_seconds(group, nbytes)     # 1 ms + 2 x 10 us + 4 ms = 5.02 ms
    assert plain == pytest.approx(5.02e-3)
    assert overlapped_round_seconds(cal, group, nbytes, 1, compute_s=1.0) == plain
    # Backward much longer than the communication: only the last bucket shows.
    c4 = cal.collective_seconds(group, nbytes / 4)    # 1 ms + 20 us + 1 ms
    assert overlapped_round_seconds(cal, group, nbytes, 4, compute_s=1.0) == pytest.approx(c4)
    # No compute to hide behind: all four buckets, each paying its overhead: more than plain.
    assert overlapped_round_seconds(cal, group, nbytes, 4, compute_s=0.0) == \
        pytest.approx(4 * c4) and 4 * c4 > plain
    # In between, by hand: k c - B (k-1)/k with B = 2/3 x 6 ms = 4 ms: 4 x 2.02 - 3 = 5.08 ms.
    assert BACKWARD_SHARE == pytest.approx(2 / 3)
    assert overlapped_round_seconds(cal, group, nbytes, 4, compute_s=6e-3) == \
        pytest.approx(4 * 2.02e-3 - 4e-3 * 3 / 4)


def test_a_bucketed_run_is_costed_from_its_config_json():
    """The shape comes from config.json: overlap from the algorithm, buckets from `derived`."""
    def shape(bucket_mb, buckets):
        cfg = preset("smoke", algorithm="gradient_allreduce").to_dict()
        cfg["bucket_mb"] = bucket_mb
        return RunShape.from_config({"config": cfg, "derived": {
            "workers": 2, "averaged_floats": 1e6, "grad_buckets": buckets}})
    cal = toy_clock(step=0.5)
    assert not shape(0, None).overlap_backward and shape(0.5, 8).buckets == 8
    plain = model_counts(cal, shape(0, None), 10, 10, bytes_global=10 * 4e6)
    bucketed = model_counts(cal, shape(0.5, 8), 10, 10, bytes_global=10 * 4e6)
    assert plain["compute_s"] == bucketed["compute_s"] == 5.0
    assert plain["comm_global_s"] == pytest.approx(10 * 5.02e-3)
    # Backward (1/3 s per step) hides all but the last of 8 buckets of 0.5 MB.
    assert bucketed["comm_global_s"] == pytest.approx(10 * cal.collective_seconds((0, 1), 5e5))
    assert algorithm_class("gradient_allreduce").clock_shape(
        {"bucket_mb": 0}, 2)["overlap_backward"] is False
