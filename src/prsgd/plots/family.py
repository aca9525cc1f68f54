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

from prsgd.plots import style
from prsgd.records import rundir
from prsgd.records.results import load_run
from prsgd.records.rundir import find_runs


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


def describe(runs) -> str:
    """What the family's runs share: workers, dataset, epochs."""
    if not runs:
        return "no runs"
    meta = runs[0][1]
    data = meta.get("provenance", {}).get("dataset", {}).get("name") or meta["config"]["dataset"]
    return (f"N = {meta['derived']['workers']} workers, {data}, "
            f"{meta['config']['epochs']} epochs")


def family_figure(runs):
    """(a) training loss per epoch and (b) test accuracy per averaging round for every algorithm
    on the same data and steps; (c) Alg 1 vs Alg 3 with one worker slowed down."""
    slow = [r for r in runs if r[1]["config"].get("slowdown")]
    family = [r for r in runs if not r[1]["config"].get("slowdown")]
    fig, (a, b, c) = style.figure(3, width=19, height=5.4)
    # colour, marker AND line style per algorithm: K-AVG's curve lies on PR-SGD I=4's
    looks = style.variant_styles(label(cfg) for _, cfg, _ in family)
    for name, cfg, df in family:
        lab = label(cfg)
        a.plot(df.epoch, df.train_loss, ms=5, label=lab, **looks[lab])
        if "test_acc" in df:
            b.plot(df.rounds + df.rounds_local, df.test_acc, ms=5, label=lab, **looks[lab])
    style.labels(a, "epoch", "training loss (mean of the epoch's mini-batches)")
    style.title(a, "(a) the family, same data and steps")
    b.set_xscale("symlog")
    style.labels(b, "averaging rounds so far (global + local, symlog scale)",
                 "test accuracy of the averaged model")
    style.title(b, "(b) accuracy per averaging round")
    style.legend_outside(b, title="algorithm (panels a, b)")
    looks = style.variant_styles(label(cfg) for _, cfg, _ in slow)
    for name, cfg, df in slow:
        lab = label(cfg)
        c.plot(df.train_seconds, df.train_loss, ms=5, **looks[lab],
               label=f"{lab}, slowdown {','.join(map(str, cfg['config']['slowdown']))}")
    style.labels(c, "training wall-clock seconds", "training loss")
    style.title(c, "(c) one worker 2x slower: Alg 1 waits, Alg 3 does not")
    style.legend_outside(c)
    for ax in (a, b, c):
        style.grid(ax)
    style.suptitle(fig, f"The algorithm family on one small run ({describe(family or slow)}); "
                   f"(c): {describe(slow)}")
    return fig


def table_and_figure_main(argv, *, prog: str, description: str, png: str, summary, figure,
                          who: str) -> int:
    """The command line of a figure over the run directories under ROOT/runs (or ROOT):
    `summary(runs)` -> ROOT/summary.csv (and printed), `figure(runs)` -> ROOT/`png` or --out.
    `who` names the command in its one-line refusal when there are no finished runs."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("root", help="folder holding runs/ (run directories)")
    p.add_argument("--out", default="", help=f"PNG path (default ROOT/{png})")
    args = p.parse_args(argv)
    root = Path(args.root)
    runs = load_family(rundir.runs_dir(root) if rundir.runs_dir(root).is_dir() else root)
    if not runs:
        print(f"{who}: no finished runs under {root}", file=sys.stderr)
        return 2
    table = summary(runs)
    table.to_csv(root / "summary.csv", index=False)
    print(table.to_string(index=False))
    print(style.save(figure(runs), Path(args.out) if args.out else root / png)[0])
    return 0


def main(argv=None) -> int:
    return table_and_figure_main(argv, prog="python -m prsgd.plots.family",
                                 description=__doc__.split("\n")[0], png="family.png",
                                 summary=summary, figure=family_figure, who="plot_family")


if __name__ == "__main__":
    sys.exit(main())
