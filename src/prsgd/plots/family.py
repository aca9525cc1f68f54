"""The family figure: every algorithm on one small run, and Algorithm 1 vs Algorithm 3 with a slow
worker. Reads run directories (config.json + metrics.csv) through `results.load_run`.

    python -m prsgd.plots.family results/family     # -> results/family/family.png, summary.csv

Runs under ROOT/runs are split by world size: the largest is panel (a)-(b) (the family on the
same data), runs with `slowdown` set are panel (c) (training loss against wall-clock time).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prsgd.records.results import find_runs, load_run


def label(cfg: dict) -> str:
    """A short name for a run's algorithm and the options that define it (the algorithm's own
    `label`, prsgd.algorithms); `cfg`: config.json or its `config`."""
    from prsgd.algorithms import label as algorithm_label
    return algorithm_label(cfg["config"] if "config" in cfg else cfg)


def load_family(root) -> list[tuple[str, dict, "pandas.DataFrame"]]:
    runs = []
    for d in find_runs(Path(root)):
        cfg, df = load_run(d)
        if len(df):
            runs.append((d.name, cfg, df))
    return runs


def summary(runs) -> "pandas.DataFrame":
    import pandas as pd
    rows = []
    for name, cfg, df in runs:
        last = df.iloc[-1]
        rows.append({"run": name, "label": label(cfg), "workers": cfg["derived"]["workers"],
                     "slowdown": ",".join(map(str, cfg["config"].get("slowdown", ()))),
                     "epochs": int(last.epoch), "worker_steps": int(last.get("worker_steps", 0)),
                     "rounds": int(last.rounds), "rounds_local": int(last.rounds_local),
                     "MB": round(last.bytes / 1e6, 1), "train_seconds": round(last.train_seconds, 1),
                     "comm_seconds": round(last.comm_seconds, 1),
                     "train_loss": round(last.train_loss, 4),
                     "test_acc": round(last.get("test_acc", float("nan")), 4)})
    return pd.DataFrame(rows)


def plot(runs, out_png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slow = [r for r in runs if r[1]["config"].get("slowdown")]
    family = [r for r in runs if not r[1]["config"].get("slowdown")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for name, cfg, df in family:
        lab = label(cfg)
        style = "--" if cfg["config"]["algorithm"] == "kavg" else "-"  # K-AVG overlays Alg 1
        axes[0].plot(df.epoch, df.train_loss, style, marker="o", label=lab)
        if "test_acc" in df:
            rounds = df.rounds + df.rounds_local
            axes[1].plot(rounds, df.test_acc, style, marker="o", label=lab)
    axes[0].set(xlabel="epoch", ylabel="training loss (mean of the epoch's mini-batches)",
                title="(a) the family, same data and steps")
    axes[1].set(xlabel="averaging rounds so far (global + local)", xscale="symlog",
                ylabel="test accuracy of the averaged model", title="(b) accuracy per round")
    if family:
        axes[0].legend(fontsize=7)
    for name, cfg, df in slow:
        lab = f"{label(cfg)}, slowdown {','.join(map(str, cfg['config']['slowdown']))}"
        axes[2].plot(df.train_seconds, df.train_loss, marker="o", label=lab)
    axes[2].set(xlabel="training wall-clock seconds", ylabel="training loss",
                title="(c) one worker 2x slower: Alg 1 waits, Alg 3 does not")
    if slow:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prsgd.plots.family", description=__doc__.split("\n")[0])
    p.add_argument("root", help="folder holding runs/ (run directories)")
    p.add_argument("--out", default="", help="PNG path (default ROOT/family.png)")
    args = p.parse_args(argv)
    root = Path(args.root)
    runs = load_family(root / "runs" if (root / "runs").is_dir() else root)
    if not runs:
        print(f"plot_family: no finished runs under {root}", file=sys.stderr)
        return 2
    table = summary(runs)
    table.to_csv(root / "summary.csv", index=False)
    print(table.to_string(index=False))
    print(plot(runs, Path(args.out) if args.out else root / "family.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
