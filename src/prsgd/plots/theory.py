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

import numpy as np
import pandas as pd

from prsgd.plots import style

from prsgd.records import rundir  # noqa: E402


def load_diagnostics(run_dir) -> tuple[dict, pd.DataFrame]:
    run_dir = Path(run_dir)
    df = rundir.read_diagnostics(run_dir)
    return rundir.read_config(run_dir), df


def plot_consensus(run_dirs, path, title: str | None = None) -> Path:
    return style.save(consensus_figure(run_dirs, title), path)[0]


def consensus_figure(run_dirs, title: str | None = None):
    runs = sorted((load_diagnostics(d) for d in run_dirs),
                  key=lambda md: md[0]["config"]["interval"])
    fig, ax = style.figure(width=8.5)
    for meta, df in runs:
        color = style.interval_color(meta["config"]["interval"])
        I = meta["config"]["interval"]
        th = meta.get("theory", {})
        inside = th.get("inside_corollary1")
        tag = "" if inside is None else (" (inside Cor. 1)" if inside else " (outside Cor. 1)")
        ax.plot(df["epoch"], df["consensus_mean"], "o-", color=color, label=f"I = {I}{tag}")
        ax.plot(df["epoch"], df["lemma1_bound"], "--", color=color, alpha=0.7)
    ax.plot([], [], "k--", alpha=0.7, label="Lemma 1 bound 4γ²I²G²")
    ax.set_yscale("log")
    style.log_axis(ax.yaxis, *ax.get_ylim())
    style.labels(ax, "epoch", "consensus distance (1/N) Σ‖x_i − x̄‖² before averaging")
    if runs:
        c = runs[0][0]
        style.title(ax, title or f"Consensus distance and Lemma 1's bound: "
                    f"N = {c['derived']['workers']}, {c['provenance']['dataset']['name']}")
    return _finish(fig, ax)


def _finish(fig, ax):
    """Legend outside the data, grid."""
    style.legend_outside(ax)
    style.grid(ax)
    return fig


def plot_speedup(rows, path, fit: tuple[float, float] | None = None, title: str = "") -> Path:
    return style.save(speedup_figure(rows, fit, title), path)[0]


def speedup_figure(rows, fit: tuple[float, float] | None = None, title: str = ""):
    from prsgd.experiments.stich import theory_speedup
    df = pd.DataFrame(rows)
    base = df[df["K"] == 1]
    ks = sorted(df["K"].unique())
    fig, ax = style.figure(width=8.0)
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
    style.log2_axis(ax.xaxis, ks)
    style.log_axis(ax.yaxis, *ax.get_ylim(), base=2)
    style.labels(ax, "workers K", "speed-up T_ε(1) / T_ε(K, H)")
    style.title(ax, title or "Stich's speed-up: measured and Theorem 2.2's form")
    return _finish(fig, ax)


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
