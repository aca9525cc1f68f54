"""Stich's local-SGD speed-up experiment (ICLR 2019, Figs. 4-5) through prsgd's trainer.

    PYTHONPATH=src python scripts/stich_speedup.py --workers 1,2,4,8,16 --intervals 1,4,16 \
        --out results/theory/stich

Writes OUT/speedup.csv (one row per run: K, H, b, T_eps, speed-up), OUT/speedup.json (setup,
f*, fitted theory constants, provenance) and OUT/speedup.png. See src/prsgd/experiments/stich.py.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prsgd.experiments import stich  # noqa: E402
from prsgd.plots.theory import plot_speedup  # noqa: E402
from prsgd.records.results import provenance  # noqa: E402
from prsgd.records.rundir import write_json_atomic  # noqa: E402


def ints(text: str) -> tuple[int, ...]:
    try:
        v = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers")
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError("every value must be >= 1")
    return v


def main(argv=None) -> int:
    d = stich.Setup()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=ints, default=(1, 2, 4, 8, 16), help="values of K")
    p.add_argument("--intervals", type=ints, default=(1, 4, 16), help="values of H")
    p.add_argument("--n", type=int, default=d.n, help="training samples (lambda = 1/n)")
    p.add_argument("--batch", type=int, default=d.batch, help="local mini-batch b")
    p.add_argument("--lr", type=float, default=d.lr, help="eta_0")
    p.add_argument("--shift", type=float, default=d.shift, help="a in eta_t = eta_0 a/(a+t-1)")
    p.add_argument("--eps", type=float, default=d.eps, help="target sub-optimality")
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per (K, H) with seeds 0..R-1 (data order); speed-ups are averaged")
    p.add_argument("--out", default="results/theory/stich")
    a = p.parse_args(argv)
    if a.eps <= 0 or a.lr <= 0 or a.n < 2 or a.batch < 1 or a.repeats < 1:
        p.error("--eps and --lr must be > 0, --n >= 2, --batch >= 1, --repeats >= 1")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, facts = [], None
    for seed in range(a.repeats):
        setup = stich.Setup(n=a.n, batch=a.batch, lr=a.lr, shift=a.shift, eps=a.eps,
                            max_steps=a.max_steps, seed=seed, out=str(out / "runs"))
        r, facts = stich.sweep(setup, a.workers, a.intervals)
        rows += r
    with open(out / "speedup.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fit = stich.fit_theory(rows)
    b = a.batch
    plot_speedup(rows, out / "speedup.png", fit,
                 title=f"local SGD, logistic regression (synthetic, n={a.n}), b={b}, ε={a.eps}")
    ds = type("D", (), {"name": "synthetic-logreg", "source": facts["dataset"],
                        "checksum": facts["dataset_sha256"], "train_y": range(a.n),
                        "test_y": range(0)})
    write_json_atomic(out / "speedup.json", {
        "setup": {k: v for k, v in asdict(setup).items() if k != "seed"}, "repeats": a.repeats,
        "workers": a.workers, "intervals": a.intervals, "problem": facts,
        "theory_fit": {"form": "eps = A/(K T) + B H^2/T^2", "A": fit[0], "B": fit[1]},
        "provenance": provenance(world_size=1, devices=["cpu"], dataset=ds)})
    print(f"wrote {out / 'speedup.csv'}, {out / 'speedup.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
