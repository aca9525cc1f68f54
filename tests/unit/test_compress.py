"""Compressors (issue 19): exact payload sizes, error bounds, the identity is exact, and error
feedback is what makes a biased compressor converge (a case where top-k alone provably stalls)."""
from __future__ import annotations

import math

import pytest
import torch

from prsgd.compress import REGISTRY, ErrorFeedback, make_compressor


def test_registry_names_each_compressor_once():
    assert set(REGISTRY) == {"none", "fp16", "bf16", "int8", "topk"}
    assert all(REGISTRY[name].name == name for name in REGISTRY)


@pytest.mark.parametrize("n", [1, 1000, 1024, 4097])
def test_payload_bytes_are_the_bytes_sent(n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    expect = {"none": 4 * n, "fp16": 2 * n, "bf16": 2 * n,
              "int8": n + 4 * math.ceil(n / 1024), "topk": 8 * max(1, math.ceil(0.01 * n))}
    for name, nbytes in expect.items():
        c = make_compressor(name)
        assert c.encode(x).nbytes == nbytes == c.payload_bytes(n), name


def test_identity_is_exact_and_casts_round_as_their_dtype():
    x = torch.randn(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(make_compressor("none").roundtrip(x), x)
    x32 = x.float()
    assert torch.equal(make_compressor("fp16").roundtrip(x32), x32.half().float())
    assert torch.equal(make_compressor("bf16").roundtrip(x32), x32.bfloat16().float())


def test_int8_error_is_at_most_half_a_step_of_its_chunk():
    x = torch.randn(3000, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.01, 100, 3000)
    c = make_compressor("int8", chunk=256)
    y = c.roundtrip(x)
    for s in range(0, 3000, 256):
        chunk = x[s:s + 256]
        step = chunk.abs().max() / 127
        assert (y[s:s + 256] - chunk).abs().max() <= step / 2 + 1e-6 * step
    assert torch.equal(c.roundtrip(torch.zeros(10)), torch.zeros(10))   # an all-zero chunk


def test_topk_keeps_exactly_the_largest_magnitudes():
    x = torch.tensor([0.1, -5.0, 0.3, 4.0, -0.2, 0.0, 3.0, -0.05, 0.01, 2.0])
    y = make_compressor("topk", ratio=0.3).roundtrip(x)
    assert torch.equal(y, torch.tensor([0, -5.0, 0, 4.0, 0, 0, 3.0, 0, 0, 0]))


@pytest.mark.parametrize("name, options", [("topk", {"ratio": 0}), ("topk", {"ratio": 1.5}),
                                           ("topk", {"ratio": float("nan")}),
                                           ("int8", {"chunk": 0})])
def test_bad_options_are_refused(name, options):
    with pytest.raises(ValueError, match=name):
        make_compressor(name, **options)


# --- error feedback ------------------------------------------------------------------------------
# Two workers, f_i(x) = |x - t_i|^2 / 2 with t_1 = (10, 1), t_2 = (-10, 1): the average's optimum
# is (0, 1). Local SGD from x̄ = 0 with compressed rounds x̄ <- x̄ + mean_i C(x_i - x̄). Each
# worker's delta is c (+-10, 1): top-1 sends the first coordinate only, the two cancel, and the
# second coordinate is never sent: x̄ stays at (0, 0) for ever. Error feedback accumulates the
# unsent second coordinate until it is the largest, so it is sent, and x̄ reaches the optimum.
TARGETS = torch.tensor([[10.0, 1.0], [-10.0, 1.0]], dtype=torch.float64)


def local_sgd(compress, rounds=300, interval=4, lr=0.05):
    xbar, path = torch.zeros(2, dtype=torch.float64), []
    for _ in range(rounds):
        sent = []
        for i, target in enumerate(TARGETS):
            x = xbar.clone()
            for _ in range(interval):
                x -= lr * (x - target)
            sent.append(compress(i, x - xbar))
        xbar = xbar + torch.stack(sent).mean(0)
        path.append(xbar.clone())
    return torch.stack(path)


def test_topk_without_error_feedback_stalls():
    topk = make_compressor("topk", ratio=0.5)
    path = local_sgd(lambda i, d: topk.roundtrip(d).double(), rounds=1500, lr=0.01)
    assert torch.equal(path[-1], torch.zeros(2, dtype=torch.float64))   # never moved


def test_error_feedback_makes_topk_converge():
    topk = make_compressor("topk", ratio=0.5)
    feedback = [ErrorFeedback(topk), ErrorFeedback(topk)]
    path = local_sgd(lambda i, d: feedback[i].compress(d)[1].double(), rounds=1500, lr=0.01)
    optimum = TARGETS.mean(0)
    # x̄ circles the optimum at a distance of the order of what one round holds back (lr I |t|);
    # without feedback it stays at distance 1 (previous test).
    last = path[-250:].mean(0)
    assert (last - optimum).norm() < 0.05, last
    plain = local_sgd(lambda i, d: d, rounds=1500, lr=0.01)
    assert (plain[-1] - optimum).norm() < 1e-6


def test_identity_compressed_rounds_equal_plain_averaging_bitwise():
    ident = make_compressor("none")
    feedback = [ErrorFeedback(ident), ErrorFeedback(ident)]
    a = local_sgd(lambda i, d: feedback[i].compress(d)[1], rounds=20)
    b = local_sgd(lambda i, d: d, rounds=20)
    assert torch.equal(a, b)
    assert all(torch.equal(f.residual, torch.zeros(2, dtype=torch.float64)) for f in feedback)


def test_error_feedback_state_resumes_exactly():
    """Stopping after 7 rounds and restoring the residuals gives the same rounds as not stopping."""
    topk = make_compressor("topk", ratio=0.5)
    full = [ErrorFeedback(topk), ErrorFeedback(topk)]
    deltas = torch.randn(12, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    want = [[full[i].compress(deltas[r, i])[1] for i in range(2)] for r in range(12)]
    first = [ErrorFeedback(topk), ErrorFeedback(topk)]
    for r in range(7):
        for i in range(2):
            first[i].compress(deltas[r, i])
    resumed = [ErrorFeedback(topk), ErrorFeedback(topk)]
    for f, g in zip(resumed, first):
        f.load_state_dict(g.state_dict())
    got = [[resumed[i].compress(deltas[r, i])[1] for i in range(2)] for r in range(7, 12)]
    assert all(torch.equal(g, w) for gr, wr in zip(got, want[7:]) for g, w in zip(gr, wr))
