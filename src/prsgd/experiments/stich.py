"""Stich's speed-up experiment (Stich, "Local SGD converges fast and communicates little",
ICLR 2019, Section 4, Figures 4-5), run through the ordinary trainer.

Problem: regularised logistic regression f(x) = (1/n) Σ log(1 + exp(−y_i a_iᵀx)) + (λ/2)‖x‖²
with λ = 1/n (Stich's choice) on `synthetic_logreg` (features.py: w8a, Stich's set, cannot be
downloaded here). x = (w, bias); the bias is regularised too, because the trainer's weight decay
(= λ) covers every parameter, and the optimum below is computed for that same objective.

1. The optimum f* = min f is computed first to high precision: full-batch Newton in float64
   until ‖∇f‖ ≤ 1e-12, so f(x*) − f* ≤ ‖∇f‖²/(2λ) < 1e-20.
2. Local SGD with K workers, local mini-batch b and sync interval H is `prsgd.train`'s Trainer
   with `--model logreg --backend packed --workers K --interval H --batch-size b`, momentum 0,
   weight decay λ and Stich's decaying step lr·a/(a + t − 1). A hook evaluates, after every local
   step t, the sub-optimality f(x̄_t) − f* of the virtual average x̄_t of the K local models (in
   float64), and stops the run at the first t with f(x̄_t) − f* ≤ ε.
3. Speed-up as Stich defines it: S(K, H) = T_ε(1) / T_ε(K, H), the iterations one worker needs
   divided by the parallel iterations (local steps per worker) local SGD needs.

Theoretical curve: Theorem 2.2 bounds the sub-optimality after T steps by terms of the form
A/(bKT) + B·H²/T² (+ higher order), i.e. ε ≈ A'/(K T) + B·H²/T² for fixed b. The constants of the
theorem are worst-case; we fit A', B by linear least squares to the measured (K, H, T_ε) points
(the equation is linear in A', B) and draw S(K, H) = T_ε(1, 1)/T_ε(K, H) from the fitted form,
next to the ideal S = K.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from prsgd.core import config as config_mod
from prsgd.data import dataset as data_mod
from prsgd.data import plan as data_mod_plan


def objective(params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """f(w, b) in float64; params = [w (d) | bias (1)], y in {0, 1}."""
    w, b = params[:-1], params[-1]
    z = x @ w + b
    return (F.softplus(z) - y * z).mean() + 0.5 * lam * params.square().sum()


def optimum(x: torch.Tensor, y: torch.Tensor, lam: float, tol: float = 1e-12):
    """(f*, x*) by full-batch Newton's method in float64 (d is small, f is λ-strongly convex and
    smooth, so Newton with a backtracking line search converges quadratically); raises unless
    ‖∇f(x*)‖ ≤ tol, so f(x*) − f* ≤ ‖∇f‖²/(2λ) is negligible."""
    a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)  # bias column
    yd = y.double()
    p = torch.zeros(a.shape[1], dtype=torch.float64)
    f = lambda q: objective(q, x.double(), yd, lam)
    for _ in range(100):
        s = torch.sigmoid(a @ p)
        grad = a.T @ (s - yd) / len(yd) + lam * p
        if float(grad.norm()) <= tol:
            return float(f(p)), p
        hess = (a.T * (s * (1 - s))) @ a / len(yd) + lam * torch.eye(len(p), dtype=torch.float64)
        step = torch.linalg.solve(hess, grad)
        t, f0 = 1.0, float(f(p))
        while float(f(p - t * step)) > f0 - 0.25 * t * float(grad @ step) and t > 1e-8:
            t *= 0.5
        p = p - t * step
    raise RuntimeError(f"Newton did not reach ‖∇f‖ <= {tol} (got {float(grad.norm()):.3g})")


class TargetReached(Exception):
    def __init__(self, step: int, gap: float):
        super().__init__(f"target reached at step {step} (f - f* = {gap:.3g})")
        self.step, self.gap = step, gap


class SubOptimalityProbe:
    """Trainer hook: f(x̄_t) − f* of the virtual average after every local step."""

    def __init__(self, x, y, lam: float, f_star: float, eps: float):
        self.x, self.y = x.double(), y.double()
        self.lam, self.f_star, self.eps = lam, f_star, eps
        self.gaps: list[float] = []

    def after_step(self, trainer, step: int, events):
        mean = trainer.fm.replica_mean().double()     # packed: [w (d) | bias] averaged
        gap = float(objective(mean, self.x, self.y, self.lam)) - self.f_star
        self.gaps.append(gap)
        if gap <= self.eps:
            raise TargetReached(step, gap)


@dataclass
class Setup:
    n: int = 2048            # training samples of synthetic_logreg
    batch: int = 4           # local mini-batch b
    lr: float = 2.0          # η_0 (a sample's logistic loss is ~1/4-smooth: ‖a_i‖ ≈ 1)
    shift: float = 1024.0    # a in η_t = η_0·a/(a + t − 1)
    eps: float = 0.003       # target sub-optimality ε
    max_steps: int = 8000    # budget of local steps per run (not reached: T_ε = nan)
    seed: int = 0
    out: str = "runs/stich"


def run_one(setup: Setup, workers: int, interval: int, x, y, f_star: float) -> dict:
    from prsgd.backends import packing_backend
    from prsgd.core.loop import Trainer  # late: keeps `import prsgd.experiments.stich` light
    lam = 1.0 / setup.n
    steps_per_epoch = data_mod_plan.steps_per_epoch(setup.n, workers, setup.batch)
    epochs = math.ceil(setup.max_steps / steps_per_epoch)
    cfg = config_mod.preset(
        "smoke", model="logreg", dataset="synthetic_logreg", train_subset=setup.n,
        backend=packing_backend(), workers=workers, interval=interval, batch_size=setup.batch,
        lr=setup.lr, lr_decay_shift=setup.shift, lr_milestones=(), momentum=0.0,
        weight_decay=lam, augment=False, epochs=epochs, max_steps=setup.max_steps,
        eval_every=0, seed=setup.seed, out=setup.out, progress=False, checkpoint_every=0)
    probe = SubOptimalityProbe(x, y, lam, f_star, setup.eps)
    trainer = Trainer(cfg, hooks=probe)
    torch.set_num_threads(1)   # a tiny model: threads only add overhead
    t0 = time.perf_counter()
    steps, gap = math.nan, math.nan
    try:
        trainer.train()
    except TargetReached as hit:   # Trainer.train closes its writers on every exit path
        steps, gap = hit.step, hit.gap
    return {"K": workers, "H": interval, "b": setup.batch, "seed": setup.seed,
            "steps_to_eps": steps, "gap_at_stop": gap, "eps": setup.eps,
            "run_id": cfg.run_id, "seconds": time.perf_counter() - t0}


def sweep(setup: Setup, workers=(1, 2, 4, 8, 16), intervals=(1, 4, 16), log=print):
    """Rows of measured T_ε(K, H) and speed-ups, plus the problem's facts (f*, λ, n)."""
    ds = data_mod.load("synthetic_logreg", train_subset=setup.n, seed=setup.seed)
    x, y = ds.train_x, ds.train_y
    lam = 1.0 / setup.n
    f_star, x_star = optimum(x, y, lam)
    f0 = float(objective(torch.zeros_like(x_star), x.double(), y.double(), lam))
    log(f"f* = {f_star:.12f} (Newton, float64), f(0) - f* = {f0 - f_star:.4g}, eps = {setup.eps}")
    rows = []
    base = run_one(setup, 1, 1, x, y, f_star)
    log(f"K=1: T_eps = {base['steps_to_eps']}")
    rows.append({**base, "speedup": 1.0})
    for h in intervals:
        for k in workers:
            if k == 1:
                continue
            r = run_one(setup, k, h, x, y, f_star)
            r["speedup"] = base["steps_to_eps"] / r["steps_to_eps"]
            log(f"K={k} H={h}: T_eps = {r['steps_to_eps']} speed-up {r['speedup']:.2f}")
            rows.append(r)
    facts = {"f_star": f_star, "f0_minus_f_star": f0 - f_star, "lambda": lam, "n": setup.n,
             "dim": int(x.shape[1]), "dataset": ds.source, "dataset_sha256": ds.checksum}
    return rows, facts


def fit_theory(rows) -> tuple[float, float]:
    """Least-squares (A, B) ≥ 0 in ε = A/(K T) + B H²/T² over the measured points."""
    pts = [r for r in rows if np.isfinite(r["steps_to_eps"])]
    m = np.array([[1.0 / (r["K"] * r["steps_to_eps"]), r["H"] ** 2 / r["steps_to_eps"] ** 2]
                  for r in pts])
    e = np.array([r["eps"] for r in pts])
    # Scale rows so every point weighs the same relative error.
    coef, *_ = np.linalg.lstsq(m / e[:, None], np.ones(len(pts)), rcond=None)
    a, b = (max(float(c), 0.0) for c in coef)
    return a, b


def theory_steps(k, h, eps: float, a: float, b: float):
    """T solving ε = a/(k T) + b h²/T² (positive root)."""
    k, h = np.asarray(k, float), np.asarray(h, float)
    p = a / k
    return (p + np.sqrt(p * p + 4 * eps * b * h * h)) / (2 * eps)


def theory_speedup(k, h, eps: float, a: float, b: float):
    return theory_steps(1, 1, eps, a, b) / theory_steps(k, h, eps, a, b)
