"""Figures that put the theory next to the runs (independent of the Figure 3 plotting code).

- `plot_consensus(run_dirs, path)`: consensus distance before each round (epoch mean) against
  epochs, one line per interval I, with each run's Lemma 1 bound 4γ²I²G² (dashed, same colour)
  from its own measured G². Reads `diagnostics.csv` + `config.json` of `--diagnostics` runs.
- `plot_speedup(rows, path, fit)`: Stich's measured speed-up T_ε(1)/T_ε(K, H) against K for each
  H, with the ideal S = K and the fitted Theorem 2.2 curve (stich.py).

    python -m prsgd.plots.theory consensus RUN_DIR... --out results/theory/consensus.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from prsgd.records import rundir  # noqa: E402


def load_diagnostics(run_dir) -> tuple[dict, pd.DataFrame]:
    run_dir = Path(run_dir)
    df = rundir.read_diagnostics(run_dir)
    return rundir.read_config(run_dir), df


def plot_consensus(run_dirs, path, title: str | None = None) -> Path:
    runs = sorted((load_diagnostics(d) for d in run_dirs),
                  key=lambda md: md[0]["config"]["interval"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (meta, df) in enumerate(runs):
        color = f"C{i % 10}"
        I = meta["config"]["interval"]
        th = meta.get("theory", {})
        inside = th.get("inside_corollary1")
        tag = "" if inside is None else (" (inside Cor. 1)" if inside else " (outside Cor. 1)")
        ax.plot(df["epoch"], df["consensus_mean"], "o-", color=color, label=f"I = {I}{tag}")
        ax.plot(df["epoch"], df["lemma1_bound"], "--", color=color, alpha=0.7)
    ax.plot([], [], "k--", alpha=0.7, label="Lemma 1 bound 4γ²I²G²")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("consensus distance (1/N) Σ‖x_i − x̄‖² before averaging")
    if runs:
        c = runs[0][0]
        ax.set_title(title or f"N = {c['derived']['workers']}, {c['provenance']['dataset']['name']}")
    return _finish(fig, ax, path)


def _finish(fig, ax, path) -> Path:
    """Legend, grid, layout; write the figure to `path` (folders created) and close it."""
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_speedup(rows, path, fit: tuple[float, float] | None = None, title: str = "") -> Path:
    from prsgd.experiments.stich import theory_speedup
    df = pd.DataFrame(rows)
    base = df[df["K"] == 1]
    ks = sorted(df["K"].unique())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    kk = np.linspace(1, max(ks), 200)
    ax.plot(kk, kk, ":", color="gray", label="ideal S = K")
    for i, h in enumerate(sorted(df.loc[df["K"] > 1, "H"].unique())):
        color = f"C{i % 10}"
        sub = pd.concat([base.assign(H=h), df[(df["H"] == h) & (df["K"] > 1)]])
        sub = sub.groupby("K", as_index=False)["speedup"].mean()
        ax.plot(sub["K"], sub["speedup"], "o-", color=color, label=f"measured H = {h}")
        if fit is not None:
            eps = float(df["eps"].iloc[0])
            ax.plot(kk, theory_speedup(kk, h, eps, *fit), "--", color=color, alpha=0.7)
    if fit is not None:
        ax.plot([], [], "k--", alpha=0.7, label="Thm 2.2 form, fitted")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("workers K")
    ax.set_ylabel("speed-up T_ε(1) / T_ε(K, H)")
    ax.set_title(title)
    return _finish(fig, ax, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prsgd.plots.theory", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("consensus", help="consensus distance vs epochs with the Lemma 1 bound")
    c.add_argument("runs", nargs="+", help="run directories made with --diagnostics")
    c.add_argument("--out", required=True)
    s = sub.add_parser("speedup", help="Stich speed-up from a stich_speedup CSV")
    s.add_argument("csv")
    s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        if args.what == "consensus":
            print(plot_consensus(args.runs, args.out))
        else:
            from prsgd.experiments.stich import fit_theory
            rows = pd.read_csv(args.csv).to_dict("records")
            print(plot_speedup(rows, args.out, fit_theory(rows)))
    except FileNotFoundError as e:
        print(f"prsgd.plots.theory: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
