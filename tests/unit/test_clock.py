"""The clock model (prsgd.clock): pure arithmetic against hand-computed values, the fit, the
per-level costs of Hier-AVG, calibration files and the command line. No timing anywhere."""

import pandas as pd
import pytest

from conftest import schedule_of
from prsgd.clock.collectives import Link, ring_allreduce_seconds
from prsgd.clock.model import (KIND, Calibration, CalibrationError, RunShape, model_counts,
                               model_run)
from prsgd.clock.fit import fit_alpha_beta
from prsgd.clock.presets import PRESETS, network_preset
from conftest import toy_clock, toy_clock_run
from prsgd.core.config import preset
from prsgd.core.schedule import GLOBAL, LOCAL, rounds_through


def shape_of(workers: int, payload_bytes: float = 0.0, **cfg) -> RunShape:
    """The clock's shape of a run, from its config.json as the clock reads it."""
    return RunShape.from_config({"config": preset("smoke", **cfg).to_dict(), "derived": {
        "workers": workers, "averaged_floats": payload_bytes / 4}})


def modelled(cal, workers: int, total_steps: int, payload_bytes: float, **cfg) -> dict:
    """Modelled seconds of `total_steps` steps of a run that has not been run: its rounds
    counted from the schedule the registered algorithm makes."""
    counts = rounds_through(schedule_of(cfg["algorithm"], workers, **cfg_options(cfg)),
                            total_steps)
    return model_counts(cal, shape_of(workers, payload_bytes, **cfg), total_steps,
                        counts[GLOBAL], counts[LOCAL])


def cfg_options(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "algorithm"}


def test_ring_allreduce_by_hand():
    # n = 4, 1 MB, alpha 100 us, 100 MB/s: 6 x 100 us + 6/4 x 1e6 / 1e8 s = 0.0006 + 0.015
    assert ring_allreduce_seconds(4, 1e6, 1e-4, 1e8) == pytest.approx(0.0156)
    assert ring_allreduce_seconds(2, 1e6, 0.0, 1e8) == pytest.approx(0.01)   # 2 x 1/2 x 1e6/1e8
    assert ring_allreduce_seconds(1, 1e6, 1.0, 1.0) == 0.0                   # nothing to send
    assert Link(1e-4, 1e8).ring_seconds(8, 8e6) == pytest.approx(14e-4 + 14 / 8 * 0.08)


def test_levels_follow_the_nodes():
    c = toy_clock()
    # (0, 1) share node 0: intra link; (1, 2) and all four span nodes: inter link
    assert c.collective_seconds((0, 1), 1e6) == pytest.approx(1e-3 + 2e-5 + 1e-3)
    assert c.collective_seconds((1, 2), 1e6) == pytest.approx(1e-3 + 2e-4 + 1e-2)
    assert c.collective_seconds((0, 1, 2, 3), 1e6) == pytest.approx(1e-3 + 6e-4 + 1.5e-2)
    assert c.collective_seconds((3,), 1e6) == 0.0
    # concurrent groups: the round ends with the slowest group
    assert c.round_seconds([(0, 1), (1, 2)], 1e6) == pytest.approx(1e-3 + 2e-4 + 1e-2)


def test_hier_avg_rounds_cost_their_own_level():
    """Hier-AVG, 4 workers on 2 nodes, groups of 2 = one per node, K1 = 2, K2 = 3: 60 steps
    give 10 global rounds (every 6 steps) and 20 local ones."""
    c = toy_clock(step=0.1)
    m = modelled(c, 4, 60, 1e6, algorithm="hier", interval=2, group_size=2, global_every=3)
    local = 1e-3 + 2e-5 + 1e-3            # inside a node
    glob = 1e-3 + 6e-4 + 1.5e-2           # across nodes
    assert m["compute_s"] == pytest.approx(6.0)
    assert m["comm_local_s"] == pytest.approx(20 * local)
    assert m["comm_global_s"] == pytest.approx(10 * glob)
    assert m["seconds"] == pytest.approx(6.0 + 20 * local + 10 * glob)
    # the same run as Algorithm 1 with I = 2 sends 30 global rounds instead
    flat = modelled(c, 4, 60, 1e6, algorithm="prsgd", interval=2)
    assert flat["comm_global_s"] == pytest.approx(30 * glob) and flat["comm_local_s"] == 0


def test_a_round_waits_for_the_slowest_worker():
    c = toy_clock(step=0.1)
    slow = shape_of(2, interval=4, slowdown=(1.0, 2.0))
    assert model_counts(c, slow, 40, 10)["compute_s"] == pytest.approx(40 * 0.2)
    # measured per rank (calibrate-compute under horovodrun): the slowest rank sets the pace
    c2 = toy_clock(step=0.1, per_rank_seconds_per_step=[0.1, 0.15])
    assert model_counts(c2, RunShape(workers=2), 40, 10)["compute_s"] == pytest.approx(6.0)
    # Algorithm 3: worker i makes I_i steps per round: a round lasts max_i I_i t_i
    het = shape_of(2, algorithm="hetero", worker_intervals=(1, 4), slowdown=(3.0, 1.0))
    assert model_counts(c, het, 10, 10)["compute_s"] == pytest.approx(10 * max(0.3, 0.4))


def test_the_fit_recovers_known_alpha_and_bandwidth():
    alpha, bw, overhead = 2e-4, 6.25e6, 5e-4
    pts = [(n, b, overhead + ring_allreduce_seconds(n, b, alpha, bw))
           for n in (2, 4) for b in (4096, 65536, 262144, 1_084_392)]
    fit = fit_alpha_beta(pts, overhead)
    assert fit["alpha_s"] == pytest.approx(alpha, rel=1e-9)
    assert fit["bandwidth_Bps"] == pytest.approx(bw, rel=1e-9)
    assert not fit["alpha_clamped"] and fit["residual_rms_s"] < 1e-12
    # with +-1 % noise the fit stays within a few percent
    noisy = [(n, b, t * (1.01 if k % 2 else 0.99)) for k, (n, b, t) in enumerate(pts)]
    assert fit_alpha_beta(noisy, overhead)["bandwidth_Bps"] == pytest.approx(bw, rel=0.05)
    # an overhead larger than the intercept would make alpha negative: clamped to 0
    clamped = fit_alpha_beta(pts, overhead + 1e-2)
    assert clamped["alpha_clamped"] and clamped["alpha_s"] == 0.0
    with pytest.raises(ValueError):
        fit_alpha_beta([(2, 100, 1.0)])


def test_presets_carry_sources_and_cost_what_they_say():
    for name in PRESETS:
        net = network_preset(name)
        assert net["sources"] and net["assumptions"] and net["overhead_s"] > 0
    c = Calibration.from_dict({"kind": KIND, "compute": {"seconds_per_step": 1e-3},
                               "network": network_preset("pcie3-box", cycle_time_ms=5.0)})
    # 8 GPUs, 1 MB: 2.5 ms (half a 5 ms cycle) + 8.4 us + 14 x 5.7 us + 14/8 x 1e6 / 12e9
    assert c.round_seconds([tuple(range(8))], 1e6) == pytest.approx(
        2.5e-3 + 8.4e-6 + 14 * 5.7e-6 + 14 / 8 * 1e6 / 12e9)
    # 8 one-GPU nodes: every group spans nodes; a calibration without the link a group needs
    # says so instead of guessing
    one = Calibration.from_dict({"kind": KIND, "network": network_preset("1gbe")})
    assert one.link_for((0, 1)) == one.links["inter"]
    one.ranks_per_node = 8
    with pytest.raises(CalibrationError, match="needs the 'intra' link"):
        one.collective_seconds((0, 1), 1.0)


def test_model_run_uses_each_rows_counters(tmp_path):
    rows = [{"epoch": e, "step": 40 * e, "train_seconds": 5.0 * e, "rounds": 10 * e,
             "rounds_local": 0, "bytes": 10 * e * 1e6, "bytes_local": 0} for e in (1, 2)]
    d, meta = toy_clock_run(tmp_path, rows)
    m = model_run(toy_clock(step=0.1), meta, pd.read_csv(d / "metrics.csv"))
    glob = 1e-3 + 6e-4 + 1.5e-2
    assert list(m["model_seconds"]) == pytest.approx([4 + 10 * glob, 8 + 20 * glob])
    assert list(m["model_comm_global_s"]) == pytest.approx([10 * glob, 20 * glob])


def test_a_flat_link_fits_alpha_only_when_asked():
    # time flat (here even falling a little) in the size: scheduling latency, no size term
    pts = [(4, b, 5e-4 + 6 * 0.02 + d)
           for b, d in ((4096, 1e-3), (65536, 5e-4), (1e6, 0.0), (2e6, -5e-4))]
    with pytest.raises(ValueError, match="does not grow"):
        fit_alpha_beta(pts, 5e-4)
    fit = fit_alpha_beta(pts, 5e-4, flat_ok=True)
    assert not fit["bandwidth_resolved"] and fit["alpha_s"] == pytest.approx(0.02, rel=0.02)


def test_compute_calibration_times_first_epoch_steps():
    """calibrate-compute's synthetic set holds every timed step of every replica in one epoch
    (looping over a few images timed 12-15 % slow steps on a CPU)."""
    from prsgd.data import plan as data_mod_plan
    from prsgd.clock.calibrate import calibration_images
    for steps, batch, replicas in ((23, 32, 1), (205, 32, 1), (23, 32, 8), (2, 4, 1)):
        n = calibration_images(steps, batch, replicas)
        assert data_mod_plan.steps_per_epoch(n, replicas, batch) >= steps
    assert calibration_images(10_000, 32, 8) == 50_000      # capped at CIFAR-10's size
