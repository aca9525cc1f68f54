"""The algorithms' rounds against a fake in-process communicator (the style of torchft's
local_sgd_test.py): N workers, one thread each, every worker its own FlatModel and its own
`FakeComm`; the fake records each collective it is asked for and averages with torch inside the
process. What is checked is the algorithm's mathematics (who averages with whom, when, and what
DiLoCo's outer step makes of it) against a reference written here in plain numpy. The real
launchers (packed = horovodrun = torchrun = mpirun, tests/integration) stay the proof that the
backends move the same numbers.

Each worker descends its own quadratic f_i(x) = |x - c_i|^2 / 2 (gradient x - c_i), so the
workers drift apart between rounds and every round visibly pulls them together.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from prsgd.algorithms import LoopState, algorithm_class
from prsgd.backends.base import Counters
from prsgd.core import config as config_mod
from prsgd.core.flat import FlatModel

LR = 0.1
DIM = 4                                    # nn.Linear(3, 1): 3 weights + 1 bias


class World:
    """What the workers' fake communicators share: one slot per worker, a barrier, the log."""

    def __init__(self, n: int):
        self.n, self.slots = n, [None] * n
        self.barrier = threading.Barrier(n, timeout=30)
        self.calls: list[tuple[int, str, tuple]] = []    # (step, level, groups), from worker 0


class FakeComm:
    """One worker's communicator, one worker per "process" (rank = worker): `average_` is a
    real collective over the threads of a World, by the event's groups."""

    def __init__(self, world: World, rank: int):
        self.world, self.rank, self.size = world, rank, world.n
        self.workers, self.num_workers, self.counters = [rank], world.n, Counters()
        self.step = 0                      # set by the driver, for the log

    def average_(self, region: torch.Tensor, event, extra=None) -> None:
        w = self.world
        if self.rank == 0:
            w.calls.append((self.step, event.level, event.groups))
        w.slots[self.rank] = region.clone()
        w.barrier.wait()                   # every worker's buffer is in
        group = event.group_of(self.rank)
        mean = torch.stack([w.slots[k] for k in group]).mean(0)
        w.barrier.wait()                   # every worker has read before any slot is reused
        region.copy_(mean)
        self.counters.add(event.level, region.numel() * region.element_size(), 0.0)


def targets(n: int) -> np.ndarray:
    return np.arange(n * DIM, dtype=np.float64).reshape(n, DIM) / (n * DIM)


def run_fake(n: int, steps: int, flags: list[str]):
    """Every worker's final parameters (n x DIM) and worker 0's log of collectives."""
    cfg = config_mod.from_args(["--preset", "smoke", "--dataset", "synthetic", *flags])
    world, out, errors = World(n), [None] * n, []
    c, x0 = torch.from_numpy(targets(n)), torch.from_numpy(start_params())

    def worker(rank: int):
        try:
            fm = FlatModel(torch.nn.Linear(3, 1).double())
            with torch.no_grad():
                fm.params.copy_(x0)       # the same start on every worker (as the broadcast does)
            comm = FakeComm(world, rank)
            algo = algorithm_class(cfg.algorithm)(cfg, workers=n, local_workers=[rank],
                                                  steps_per_epoch=steps, total_steps=steps,
                                                  backend="fake")
            algo.start(fm)
            loop = LoopState()
            for _ in range(steps):
                with torch.no_grad():
                    fm.params.sub_(LR * (fm.params - c[rank]))     # one local SGD step
                loop.advance(None)
                comm.step = loop.step
                for event in algo.events(loop, 0.0):
                    algo.on_round(event, fm, comm)
            out[rank] = fm.params.numpy().copy()
        except Exception as e:                             # noqa: BLE001 - reported below
            errors.append(e)
            world.barrier.abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return np.stack(out), world.calls


def start_params() -> np.ndarray:
    """The model every worker starts from (drawn once, outside the threads: they would race on
    torch's global generator)."""
    return np.linspace(-0.5, 0.5, DIM)


def local_steps(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return x - LR * (x - c)


def test_periodic_averages_all_workers_every_I_steps():
    n, steps, interval = 4, 10, 3
    got, calls = run_fake(n, steps, ["--interval", str(interval)])
    everyone = (tuple(range(n)),)
    assert calls == [(3, "global", everyone), (6, "global", everyone), (9, "global", everyone)]
    c, x = targets(n), np.tile(start_params(), (n, 1))
    for t in range(1, steps + 1):
        x = local_steps(x, c)
        if t % interval == 0:
            x[:] = x.mean(0)
    np.testing.assert_allclose(got, x, rtol=0, atol=1e-12)
    # step 10 is a local step after the last round: the workers differ again
    assert np.ptp(got, axis=0).max() > 1e-3


def test_kavg_is_periodic_under_another_name():
    prsgd, calls = run_fake(4, 8, ["--interval", "4"])
    kavg, kcalls = run_fake(4, 8, ["--algorithm", "kavg", "--interval", "4"])
    assert kcalls == calls and np.array_equal(kavg, prsgd)


def test_hier_averages_within_groups_then_globally():
    n, steps, k1, k2, s = 4, 9, 2, 2, 2
    got, calls = run_fake(n, steps, ["--algorithm", "hier", "--interval", str(k1),
                                     "--global-every", str(k2), "--group-size", str(s)])
    groups, everyone = ((0, 1), (2, 3)), ((0, 1, 2, 3),)
    assert calls == [(2, "local", groups), (4, "global", everyone), (6, "local", groups),
                     (8, "global", everyone)]
    c, x = targets(n), np.tile(start_params(), (n, 1))
    for t in range(1, steps + 1):
        x = local_steps(x, c)
        if t % (k1 * k2) == 0:
            x[:] = x.mean(0)
        elif t % k1 == 0:
            for g in groups:
                x[list(g)] = x[list(g)].mean(0)
    np.testing.assert_allclose(got, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("nesterov", [True, False])
def test_diloco_outer_step_on_the_averaged_pseudo_gradient(nesterov):
    n, steps, interval, eta, mu = 4, 8, 2, 0.7, 0.9
    got, calls = run_fake(n, steps, ["--algorithm", "diloco", "--interval", str(interval),
                                     "--outer-lr", str(eta), "--outer-momentum", str(mu),
                                     "--outer-nesterov", str(nesterov).lower()])
    assert [step for step, _, _ in calls] == [2, 4, 6, 8]     # one collective per round
    c, x = targets(n), np.tile(start_params(), (n, 1))
    copy, buf = start_params(), np.zeros(DIM)
    for t in range(1, steps + 1):
        x = local_steps(x, c)
        if t % interval == 0:
            delta = copy - x.mean(0)                  # pseudo-gradient: global model - average
            buf = mu * buf + delta
            copy = copy - eta * (delta + mu * buf if nesterov else buf)
            x[:] = copy
    np.testing.assert_allclose(got, x, rtol=0, atol=1e-12)
    # the outer step is not plain averaging: Algorithm 1 with the same I ends elsewhere
    periodic, _ = run_fake(n, steps, ["--interval", str(interval)])
    assert np.abs(got - periodic).max() > 1e-3
