"""The alpha-beta fit: measured collective times -> each level's latency and bandwidth.

Pure arithmetic over points (n ranks, bytes, seconds), kept apart from the measuring
(clock/calibrate.py) so that a stored network file can be fitted again (`prsgd.clock refit`)
and the fit tested without ranks. Each collective is fitted to its own ring model
(clock/collectives.py).
"""
from __future__ import annotations

from prsgd.clock.collectives import ALLREDUCE, COLLECTIVES

UNRESOLVED_BPS = 1e12   # "no measurable size term": stands for an unbounded bandwidth


def _terms(collective: str, n: int, nbytes: float) -> list:
    """The ring model's coefficients of alpha and of 1/B (clock/collectives.py): the model's
    seconds are alpha·c0 + c1/B. Each collective's cost at alpha = 1, B = 1, less alpha's."""
    c0 = COLLECTIVES[collective](n, 0.0, 1.0, 1.0)
    return [c0, COLLECTIVES[collective](n, nbytes, 0.0, 1.0)]


def fit_alpha_beta(points, overhead_s: float = 0.0, flat_ok: bool = False,
                   collective: str = ALLREDUCE) -> dict:
    """Least squares of t - overhead = alpha·2(n-1) + (1/B)·2(n-1)/n·bytes over points
    (n, bytes, seconds) of ring allreduces, or the ring model of another `collective` (an
    allgather's: alpha·(n-1) + (1/B)·(n-1)·bytes, bytes per worker). Returns alpha_s, bandwidth_Bps and the residuals; alpha is clamped at
    0 (and the bandwidth refitted alone) when the unconstrained fit makes it negative.
    `flat_ok`: when the time does not grow with the size at all (a link much faster than the
    latency, e.g. unshaped), fit alpha alone and report the bandwidth as unresolved
    (UNRESOLVED_BPS) instead of failing."""
    import numpy as np
    pts = [(int(n), float(b), float(t)) for n, b, t in points if n >= 2]
    if len(pts) < 2:
        raise ValueError("a fit needs at least two points with n >= 2 ranks")
    A = np.array([_terms(collective, n, b) for n, b, _ in pts])
    y = np.array([t - overhead_s for *_, t in pts])
    (alpha, inv_bw), *_ = np.linalg.lstsq(A, y, rcond=None)
    clamped = alpha < 0
    if clamped:
        alpha, inv_bw = 0.0, float(A[:, 1] @ y / (A[:, 1] @ A[:, 1]))
    resolved = inv_bw > 0
    if not resolved and flat_ok:
        alpha = float(max(0.0, (A[:, 0] @ y) / (A[:, 0] @ A[:, 0])))
        inv_bw, clamped = 1 / UNRESOLVED_BPS, alpha == 0.0
    elif not resolved:
        raise ValueError("the fitted time does not grow with the size: no bandwidth to report "
                         "(measure larger sizes)")
    resid = y - A @ np.array([alpha, inv_bw])
    return {"alpha_s": float(alpha), "bandwidth_Bps": float(1 / inv_bw),
            "bandwidth_resolved": bool(resolved), "alpha_clamped": bool(clamped),
            "residual_rms_s": float(np.sqrt(np.mean(resid ** 2))), "points": len(pts),
            "max_rel_residual": float(np.max(np.abs(resid) / np.maximum(np.abs(y), 1e-12)))}


def level_fits(points, level: str, overhead: float, flat_ok: bool = False) -> dict:
    """One level's fits: the allreduce's (alpha_s, bandwidth_Bps: every collective's link by
    default) and, under `collectives`, each other collective measured at this level, fitted to
    its own ring model (clock/collectives.py). A failed fit is kept as an `error`."""
    def fit_of(collective):
        pts = [(p["n"], p["bytes"], p["mean_s"]) for p in points
               if p["level"] == level and p.get("collective", ALLREDUCE) == collective]
        try:
            fit = fit_alpha_beta(pts, overhead, flat_ok=flat_ok, collective=collective)
        except ValueError as e:     # kept in the file, with the points, for a look
            return {"error": f"level {level} ({collective}): {e}"}
        return {"alpha_s": fit["alpha_s"], "bandwidth_Bps": fit["bandwidth_Bps"],
                "source": "measured: least-squares fit of the ring model to the points" +
                ("" if fit["bandwidth_resolved"] else "; bandwidth unresolved (time flat in size)"),
                "fit": fit}
    out = fit_of(ALLREDUCE)
    others = sorted({p.get("collective", ALLREDUCE) for p in points if p["level"] == level}
                    - {ALLREDUCE})
    if others and "error" not in out:
        out["collectives"] = {c: fit_of(c) for c in others}
    return out
