"""Figure 3 of the paper and its summary table, from a sweep directory's CSV/JSON files only.

    python scripts/plot_figure3.py SWEEP_DIR [--out DIR]

writes `figure3.{png,pdf}` (a: training loss against epochs, b: against training wall-clock
seconds, one curve per interval I, log-scale loss), `test_accuracy.{png,pdf}` and
`summary.{csv,md}`. With several seeds a curve is their mean and the band their min..max.
Everything reads through `results.load_sweep`, the loader the notebook and the tests use too.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from prsgd.algorithms import clock_shape
from prsgd.backends import times_rounds
from prsgd.backends.packed import PACKED_RUNS
from prsgd.plots import style
from prsgd.plots.clock import MEASURED, clock_note, load_clock, with_clock
from prsgd.records.results import load_sweep

PLOTTED_STATUSES = ("done", "unknown")   # unfinished or failed runs would distort the curves


def label(interval: int) -> str:
    """Curve labels as in the paper's Figure 3."""
    return "parallel mini-batch SGD (I=1)" if interval == 1 else f"PR-SGD I={interval}"


def select(df: pd.DataFrame, statuses=PLOTTED_STATUSES) -> pd.DataFrame:
    out = df[df["status"].isin(statuses)] if statuses else df
    out.attrs = df.attrs
    return out


def curves(df: pd.DataFrame, y: str, x: str = "epoch") -> dict[int, pd.DataFrame]:
    """Per interval: x (mean over seeds), and y's mean, min and max over seeds, per epoch."""
    out = {}
    for interval, g in df.dropna(subset=[y]).groupby("interval"):
        agg = g.groupby("epoch").agg(x=(x, "mean"), mean=(y, "mean"), lo=(y, "min"),
                                     hi=(y, "max"), seeds=("seed", "nunique"))
        out[int(interval)] = agg.reset_index()
    return out


def _draw(ax, df: pd.DataFrame, y: str, x: str, log: bool, suffix: str = "",
          linestyle: str = "-") -> None:
    """One curve per interval, in the interval's house colour (style.interval_color)."""
    for interval, c in curves(df, y, x).items():
        color = style.interval_color(interval)
        ax.plot(c["x"], c["mean"], linestyle, marker="o" if len(c) <= 12 else None, ms=3,
                label=label(interval) + suffix, color=color)
        if c["seeds"].max() > 1:
            ax.fill_between(c["x"], c["lo"], c["hi"], color=color, alpha=0.2, lw=0)
    if log:
        ax.set_yscale("log")
        style.log_axis(ax.yaxis, *ax.get_ylim())
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    style.grid(ax)


def describe(df: pd.DataFrame) -> str:
    """One line saying what the runs were: dataset, workers, epochs, seeds."""
    if df.empty:
        return "no finished runs"
    parts = [f"{df['dataset'].iloc[0]}", f"N={int(df['workers'].iloc[0])} workers",
             f"{int(df['epoch'].max())} epochs"]
    configs = df.attrs.get("configs", {})
    if configs:
        meta = next(iter(configs.values()))
        sub = meta["config"].get("train_subset")
        if sub:
            parts.append(f"{sub} training images")
        devices = meta.get("provenance", {}).get("devices")
        if devices:
            parts.append(str(devices[0]))
        backend = meta["config"].get("backend", "horovod")
        if not times_rounds(backend):
            parts.append(f"{backend} backend, {meta['config'].get('precision', 'fp32')}")
    seeds = df["seed"].nunique()
    parts.append(f"{seeds} seed{'s' if seeds > 1 else ''}" + (" (mean, min-max band)"
                                                              if seeds > 1 else ""))
    return ", ".join(parts)


def shared_clock(df: pd.DataFrame) -> bool:
    """True when the runs were packed into one process (`--intervals`): they then share ONE
    training clock, so their train_seconds say nothing about the cost of each interval."""
    return any(len(meta.get("derived", {}).get(PACKED_RUNS, {}).get("intervals", ())) > 1
               for meta in df.attrs.get("configs", {}).values())


SHARED_CLOCK_NOTE = ("the intervals were trained together in one packed process and share one "
                     "clock: panel (b) cannot show what communicating less saves")


def figure3(df: pd.DataFrame, title: str | None = None, clock=None, sweep_dir=None):
    """Panel (a): training loss vs epochs; panel (b): training loss vs training seconds, of the
    runs' own clock (`clock` None / "measured") or modelled from a calibration (prsgd.clock).
    `sweep_dir`: where the runs are (a lab's settings beside them name the measured clock)."""
    cal = load_clock(clock)
    fig, (a, b) = style.figure(2, height=5.2)
    _draw(a, df, "train_loss", "epoch", log=True)
    style.labels(a, "epoch (passes over the training set, all workers together)",
                 "training loss (mean mini-batch cross-entropy, log scale)")
    style.title(a, "(a) training loss vs epochs")
    _draw(b, with_clock(df, cal), "train_loss", "clock_seconds", log=True)
    if cal is None:
        style.labels(b, "training wall-clock time (s, evaluation excluded)"
                     + ("\nshared by all intervals (packed in one process)"
                        if shared_clock(df) else ""))
        style.title(b, "(b) training loss vs wall-clock time")
    else:
        style.labels(b, "MODELLED wall-clock time (s)\nlocal steps x step time + averaging "
                        "rounds x ring allreduce (prsgd.clock)")
        style.title(b, "(b) training loss vs wall-clock time (modelled)")
    style.labels(b, ylabel="training loss (log scale)")
    note = clock_note(df, cal, sweep_dir)
    if note:    # what the clock is, on the panel itself; bottom left: loss curves fall right
        style.note(b, note)
    style.legend_below(fig, a, ncols=5)     # both panels draw the same curves: one legend
    style.suptitle(fig, title or f"Figure 3: ResNet20, {describe(df)}")
    return fig


def accuracy_figure(df: pd.DataFrame, title: str | None = None):
    fig, ax = style.figure(width=8.5)
    acc = df.assign(test_acc_pct=100 * df["test_acc"])
    _draw(ax, acc, "test_acc_pct", "epoch", log=False)
    style.labels(ax, "epoch", "test accuracy of the averaged model (%)")
    style.legend_outside(ax)
    style.suptitle(fig, title or f"Test accuracy: ResNet20, {describe(df)}")
    return fig


def compare_figure(sweeps: dict[str, pd.DataFrame], y: str = "train_loss",
                   x: str = "epoch"):
    """Two (or more) sweeps on one axis: one colour per interval, one line style per sweep."""
    fig, ax = style.figure(width=9.5)
    for linestyle, (name, df) in zip(style.LINESTYLES, sweeps.items()):
        _draw(ax, df, y, x, log=y.endswith("loss"), suffix=f" [{name}]", linestyle=linestyle)
    style.labels(ax, "epoch" if x == "epoch" else "training wall-clock time (s)",
                 y.replace("_", " ") + (" (log scale)" if y.endswith("loss") else ""))
    style.title(ax, f"{y.replace('_', ' ')}: " + " vs ".join(sweeps))
    style.legend_outside(ax, fontsize=7)
    return fig


def communicated(meta: dict | None) -> bool:
    """False for runs whose comm counters time no communication: a backend whose rounds are not
    timed (packed replicas average in memory), and a captured (--cuda-graph) step leaves only
    host launch times to measure."""
    cfg = (meta or {}).get("config", {})
    return times_rounds(cfg.get("backend", "horovod")) and not cfg.get("cuda_graph")


def ring_bytes_sent(last, meta: dict | None) -> float:
    """Bytes one worker sends in ring allreduces: 2(n-1)/n x its buffer per round, per level
    (n = all workers for global rounds, the group size for Hier-AVG's local ones)."""
    cfg, n = (meta or {}).get("config", {}), int(last.get("workers") or 1)
    groups = clock_shape(cfg, n)["local_groups"] if cfg else ()
    s = len(groups[0]) if groups else n
    local = _num(last.get("bytes_local"))
    ring = lambda k: 2 * (k - 1) / k if k > 1 else 0.0
    return (_num(last.get("bytes")) - local) * ring(n) + local * ring(s)


def _num(v) -> float:
    v = pd.to_numeric(v, errors="coerce")
    return 0.0 if pd.isna(v) else float(v)


def summary_table(df: pd.DataFrame, clock=None) -> pd.DataFrame:
    """One row per interval (means over seeds): final training loss, final and best test
    accuracy, averaging rounds, the bytes of the averaged buffers (`buffer_bytes`, one worker's
    buffer x rounds) and what a ring allreduce sends for them (`ring_bytes_sent`, per worker),
    training seconds, comm seconds (n/a where nothing was communicated: packed or captured
    runs), speed-up over I = 1; with a calibration (`clock`) also the modelled seconds and the
    modelled speed-up."""
    cal = load_clock(clock)
    configs = df.attrs.get("configs", {})
    if cal is not None:
        df = with_clock(df, cal)
    rows = []
    for interval, g in df.groupby("interval"):
        per_run = []
        for rid, r in g.groupby("run_id"):
            r = r.sort_values("epoch")
            last = r.iloc[-1]
            meta = configs.get(rid)
            sent = last["rounds"] + _num(last.get("rounds_local"))
            per_run.append({**({"modelled_seconds": last["model_seconds"]} if cal else {}),
                "epochs": last["epoch"], "steps": last["step"],
                "final_train_loss": last["train_loss"],
                "final_test_acc": r["test_acc"].dropna().iloc[-1]
                if r["test_acc"].notna().any() else float("nan"),
                "best_test_acc": r["test_acc"].max(), "rounds": last["rounds"],
                "buffer_bytes": last["bytes"], "ring_bytes_sent": ring_bytes_sent(last, meta),
                "train_seconds": last["train_seconds"],
                "comm_seconds": last["comm_seconds"] if sent and communicated(meta)
                else float("nan")})
        p = pd.DataFrame(per_run)
        # i14: a diverged run (or one whose loss is not finite) has no meaningful time.
        if "status" in g and g["status"].eq("diverged").any():
            p["final_train_loss"] = float("nan")
        rows.append({"interval": int(interval), "label": label(int(interval)),
                     "seeds": len(per_run), **p.mean(numeric_only=True).to_dict()})
    cols = ["interval", "label", "seeds", "epochs", "steps", "final_train_loss", "final_test_acc",
            "best_test_acc", "rounds", "buffer_bytes", "ring_bytes_sent", "train_seconds",
            "comm_seconds"] + (["modelled_seconds"] if cal else [])
    table = pd.DataFrame(rows, columns=cols)
    # Packed runs share one clock, a one-epoch or diverged run has no meaningful time: n/a there.
    table["speedup_vs_I1"] = speedups(table, df)
    if cal is not None:
        mbase = table.loc[table["interval"] == 1, "modelled_seconds"]
        table["modelled_speedup_vs_I1"] = mbase.iloc[0] / table["modelled_seconds"] \
            if len(mbase) else float("nan")
    for c in ("seeds", "epochs", "steps", "rounds", "buffer_bytes", "ring_bytes_sent"):
        table[c] = table[c].round().astype("int64")
    return table


def speedups(table: pd.DataFrame, df: pd.DataFrame) -> pd.Series:
    """Training-time ratio of I = 1 to each interval, only where it means something: both ran
    the same number of epochs (at least 2: one epoch is mostly start-up) with a finite final
    loss, and on clocks of their own (packed runs share one: the ratio would be 1.00x)."""
    nan = pd.Series(float("nan"), index=table.index)
    base = table[table["interval"] == 1]
    if base.empty or shared_clock(df):
        return nan
    b = base.iloc[0]

    def ok(r):
        return r["epochs"] >= 2 and math.isfinite(r["final_train_loss"])

    if not ok(b):
        return nan
    good = table.apply(lambda r: ok(r) and r["epochs"] == b["epochs"], axis=1)
    return (b["train_seconds"] / table["train_seconds"]).where(good, float("nan"))


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown table without the optional `tabulate` dependency."""
    fmt = {"final_train_loss": "{:.4f}", "final_test_acc": "{:.4f}", "best_test_acc": "{:.4f}",
           "train_seconds": "{:.1f}", "comm_seconds": "{:.1f}", "speedup_vs_I1": "{:.2f}x",
           "buffer_bytes": "{:,}", "ring_bytes_sent": "{:,}", "modelled_seconds": "{:.1f}",
           "modelled_speedup_vs_I1": "{:.2f}x"}
    head = "| " + " | ".join(table.columns) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join("n/a" if isinstance(v, float) and v != v
                              else fmt.get(c, "{}").format(v) for c, v in row.items()) + " |"
            for row in table.to_dict("records")]
    return "\n".join([head, sep, *body]) + "\n"


def check_comparable(df: pd.DataFrame, sweep_dir) -> None:
    """One figure compares intervals at one number of workers N: runs of different N (which the
    title would call one N) are refused, naming which runs have which N (issue 21 §5)."""
    by_n = df.groupby("workers")["run_id"].unique()
    if len(by_n) > 1:
        sets = "; ".join(f"N={int(n)}: {', '.join(sorted(map(str, ids))[:4])}"
                         f"{' ...' if len(ids) > 4 else ''}" for n, ids in by_n.items())
        raise ValueError(f"{sweep_dir}: runs of different worker counts cannot share one figure "
                         f"({sets}); plot each N from its own folder")


def write_all(sweep_dir, out_dir=None, statuses=PLOTTED_STATUSES, clock=None) -> dict[str, Path]:
    """Every figure and table of a sweep into `out_dir` (default: the sweep directory).
    `clock`: "measured"/None (the runs' own train_seconds) or a calibration file for panel (b)."""
    cal = load_clock(clock)
    df = select(load_sweep(sweep_dir), statuses)
    if df.empty:
        raise ValueError(f"{sweep_dir}: no finished runs with metrics to plot")
    check_comparable(df, sweep_dir)
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, fig in (("figure3", figure3(df, clock=cal, sweep_dir=sweep_dir)), ("test_accuracy", accuracy_figure(df))):
        for path in style.save(fig, out / name, ("png", "pdf")):
            written[path.name] = path
    table = summary_table(df, cal)
    table.to_csv(out / "summary.csv", index=False)
    note = f"\nNote: {SHARED_CLOCK_NOTE}; train_seconds is that clock.\n" \
        if shared_clock(df) else ""
    note += COLUMNS_NOTE
    if cal is not None:
        note += (f"\nmodelled_seconds: MODELLED with the calibration {cal.name!r} "
                 "(prsgd.clock): local steps x step time + averaging rounds x ring allreduce.\n")
    elif clock_note(df, None, sweep_dir):
        note += f"\nNote: {clock_note(df, None, sweep_dir)}.\n"
    (out / "summary.md").write_text(to_markdown(table) + note)
    written["summary.csv"], written["summary.md"] = out / "summary.csv", out / "summary.md"
    return written


COLUMNS_NOTE = ("\nbuffer_bytes: one worker's averaged buffer x rounds (metrics.csv `bytes`); "
                "ring_bytes_sent: what a ring allreduce of it sends per worker, 2(n-1)/n x that; "
                "comm_seconds: n/a where nothing was communicated (packed replicas, captured "
                "steps).\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/plot_figure3.py", description=__doc__.splitlines()[0])
    p.add_argument("sweep", help="a sweep directory (or any folder of run directories)")
    p.add_argument("--out", default=None, help="where to write (default: the sweep directory)")
    p.add_argument("--all-runs", action="store_true",
                   help="also plot unfinished, failed and diverged runs")
    p.add_argument("--clock", default=MEASURED, help="panel (b)'s clock: measured (the runs' "
                   "train_seconds) or a calibration JSON (prsgd.clock) to model it")
    args = p.parse_args(argv)
    import warnings
    try:
        with warnings.catch_warnings(record=True) as caught:   # torn rows: one line each
            warnings.simplefilter("always")
            written = write_all(args.sweep, args.out, None if args.all_runs else PLOTTED_STATUSES,
                                clock=args.clock)
    except (FileNotFoundError, ValueError) as e:
        print(f"plot_figure3: error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"plot_figure3: warning: {w.message}", file=sys.stderr)
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
