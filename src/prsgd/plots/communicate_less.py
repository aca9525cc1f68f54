"""Every way to communicate less, side by side (issue 19 §7): training loss against the MEASURED
wall-clock and against the bytes each worker sent, for every variant of one lab session, and a
table of the time and bytes each variant needs to reach a target loss: measured on the lab, and
MODELLED at paper scale on the clock's presets.

    python -m prsgd.plots.communicate_less results/compress-lab \\
        [--clock "8-GPU PCIe box=results/wallclock/calibration/h100-pcie3-box.json" ...]

ROOT holds one sweep folder per variant (scripts/lab_sweep.sh VARIANTS, `make lab-compression`);
a variant is a run's label (its algorithm, I and compressor), its curve the mean over seeds.
Writes ROOT/communicate_less.{png,pdf}, runs.{csv,md} (one row per run) and
time_to_target.{csv,md}.

The modelled columns take the epochs the LAB run needed to reach the target and cost that many
epochs of the paper's setting (8 workers, 50,000 images, batch 32: 195 local steps per worker
per epoch) with the preset's step time and network, the variant's own rounds per epoch and
payload (prsgd.clock). That assumes the paper-scale run needs as many epochs as the lab's: a
model of time per epoch, not of convergence.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import pandas as pd
from prsgd.algorithms import label
from prsgd.clock.model import Calibration, CalibrationError, model_run
from prsgd.plots import style
from prsgd.plots.clock import lab_note
from prsgd.records.results import load_run
from prsgd.records.rundir import find_runs

PAPER_WORKERS, PAPER_IMAGES, PAPER_BATCH = 8, 50_000, 32
CAL_DIR = Path("results/wallclock/calibration")
DEFAULT_CLOCKS = {"8-GPU PCIe box": CAL_DIR / "h100-pcie3-box.json",
                  "8 nodes, 1 GbE": CAL_DIR / "h100-1gbe.json",
                  "8 nodes, 25 GbE": CAL_DIR / "h100-25gbe.json"}


def load_runs(root) -> list[tuple[str, dict, pd.DataFrame]]:
    """(variant, config.json, metrics) of every finished run under `root`."""
    runs = []
    for d in find_runs(root):
        meta, df = load_run(d)
        if len(df):
            runs.append((label(meta["config"]), meta, df))
    return runs


def per_run(runs) -> pd.DataFrame:
    """§6's table: per run, seconds per epoch, bytes, final loss and accuracy."""
    rows = []
    for variant, meta, df in runs:
        last = df.iloc[-1]
        rows.append({"variant": variant, "seed": meta["config"]["seed"],
                     "epochs": int(last.epoch), "rounds": int(last.rounds),
                     "s_per_epoch": round(last.train_seconds / last.epoch, 2),
                     "comm_s": round(last.comm_seconds, 1),
                     "MB_sent": round(last.bytes / 1e6, 2),
                     "MB_received": round(last.get("bytes_received", last.bytes) / 1e6, 2),
                     "train_loss": round(last.train_loss, 4),
                     "test_acc": round(last.get("test_acc", float("nan")), 4)})
    return pd.DataFrame(rows).sort_values(["variant", "seed"], ignore_index=True)


def curves(runs) -> pd.DataFrame:
    """Per variant and epoch, the mean over seeds of loss, accuracy, measured seconds and MB sent."""
    rows = [df.assign(variant=v, MB=df.bytes / 1e6) for v, _, df in runs]
    cols = ["train_loss", "test_acc", "train_seconds", "MB"]
    return (pd.concat(rows).groupby(["variant", "epoch"], sort=False)[cols].mean()
            .reset_index())


def paper_scale(meta: dict, row: pd.Series) -> tuple[dict, pd.DataFrame]:
    """A lab run's config and its metrics row, scaled to the paper's setting: PAPER_WORKERS
    workers, and its steps, rounds and bytes per epoch multiplied by paper steps / lab steps."""
    m = copy.deepcopy(meta)
    m.setdefault("derived", {})["workers"] = PAPER_WORKERS
    lab_steps = row.step / row.epoch
    scale = PAPER_IMAGES / (PAPER_WORKERS * PAPER_BATCH) / lab_steps
    cols = [c for c in ("step", "rounds", "rounds_local", "bytes", "bytes_local") if c in row]
    return m, pd.DataFrame([{c: row[c] * scale for c in cols}])


def time_to_target(runs, target: float, clocks: dict) -> pd.DataFrame:
    """Per variant: the first epoch whose mean loss (over seeds) is at or below `target`, the
    measured seconds and MB sent by then (mean over seeds), and per clock the MODELLED seconds
    of that many epochs at paper scale."""
    table = curves(runs)
    metas = {}
    for v, meta, df in runs:
        metas.setdefault(v, []).append((meta, df))
    rows = []
    for variant, g in table.groupby("variant", sort=False):
        hit = g[g.train_loss <= target]
        row = {"variant": variant, "target_loss": round(target, 4),
               "epoch": int(hit.epoch.iloc[0]) if len(hit) else None}
        row["measured_s"] = round(hit.train_seconds.iloc[0], 1) if len(hit) else math.nan
        row["MB_sent"] = round(hit.MB.iloc[0], 2) if len(hit) else math.nan
        for name, cal in clocks.items():
            secs = []
            for meta, df in metas[variant] if len(hit) else ():
                scaled_meta, scaled = paper_scale(meta, df[df.epoch == row["epoch"]].iloc[0])
                secs.append(float(model_run(cal, scaled_meta, scaled)["model_seconds"].iloc[0]))
            row[f"modelled_s {name}"] = round(sum(secs) / len(secs), 1) if secs else math.nan
        rows.append(row)
    return pd.DataFrame(rows).sort_values("measured_s", ignore_index=True)


def figure(runs, root):
    """(a) training loss against measured seconds, (b) against MB sent per worker, (c) test
    accuracy against measured seconds; one curve per variant, the mean over its seeds."""
    table = curves(runs)
    fig, (a, b, c) = style.figure(3, width=19, height=5.6)
    looks = style.variant_styles(table.variant.unique())
    for variant, g in table.groupby("variant", sort=False):
        a.plot(g.train_seconds, g.train_loss, ms=5, label=variant, **looks[variant])
        b.plot(g.MB, g.train_loss, ms=5, label=variant, **looks[variant])
        c.plot(g.train_seconds, g.test_acc, ms=5, label=variant, **looks[variant])
    style.labels(a, "MEASURED training seconds (rank 0, evaluation excluded)", "training loss")
    style.title(a, "(a) loss against the measured clock")
    b.set_xscale("log")
    style.labels(b, "MB sent per worker so far (log scale)", "training loss")
    style.title(b, "(b) loss against the bytes on the wire")
    style.labels(c, "MEASURED training seconds", "test accuracy of the averaged model")
    style.title(c, "(c) accuracy against the measured clock")
    style.legend_outside(c, title="variant (mean of its seeds)")
    for ax in (a, b, c):
        style.grid(ax)
    note = lab_note(root)
    if note:
        style.note(a, note, loc="upper right")
    seeds = sorted({m["config"]["seed"] for _, m, _ in runs})
    style.suptitle(fig, f"Every way to communicate less, measured: {len(table.variant.unique())} "
                   f"variants x seeds {', '.join(map(str, seeds))}")
    return fig


def reachable_target(runs) -> tuple[float, str]:
    """The lowest loss every variant reaches: the largest final loss (mean over seeds)."""
    last = curves(runs).groupby("variant", sort=False).train_loss.last()
    return float(last.max()), f"the largest final loss ({last.idxmax()}): every variant reaches it"


def targets(runs, target: float | None = None) -> list[tuple[float, str]]:
    """--target, or both defaults: plain PR-SGD's final loss, and the loss every variant reaches."""
    return [(target, "--target")] if target else [default_target(runs), reachable_target(runs)]


def target_table(runs, clocks: dict, target: float | None = None) -> pd.DataFrame:
    """time_to_target for each of `targets`, one table (column `target`: what it is)."""
    return pd.concat([time_to_target(runs, t, clocks).assign(target=what)
                      for t, what in targets(runs, target)], ignore_index=True)


def default_target(runs) -> tuple[float, str]:
    """Algorithm 1 at the smallest I, uncompressed: its final loss (mean over seeds)."""
    base = [(m["config"]["interval"], v) for v, m, _ in runs
            if m["config"].get("algorithm", "prsgd") == "prsgd"
            and m["config"].get("compressor", "none") == "none"
            and not m["config"].get("overlap_delay")]
    if not base:
        raise ValueError("no uncompressed PR-SGD run to take the target loss from (--target)")
    variant = min(base)[1]
    g = curves(runs)
    g = g[g.variant == variant]
    return float(g.train_loss.iloc[-1]), f"{variant}'s final loss"


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    def cell(col, v):
        if isinstance(v, float) and math.isnan(v):
            return "-"
        return str(int(v)) if col == "epoch" else str(v)
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(cols, r)) + " |"
              for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prsgd.plots.communicate_less",
                                description=__doc__.splitlines()[0])
    p.add_argument("root", help="the folder of the variants' sweeps (results/compress-lab)")
    p.add_argument("--clock", action="append", metavar="LABEL=CALIBRATION.json",
                   help="a modelled column (default: the 8-GPU PCIe box, 1 GbE and 25 GbE presets)")
    p.add_argument("--target", type=float, help="target training loss (default: PR-SGD at the "
                   "smallest I, uncompressed: its final loss, mean over seeds)")
    a = p.parse_args(argv)
    root = Path(a.root)
    try:
        specs = [s.partition("=")[::2] for s in a.clock] if a.clock else DEFAULT_CLOCKS.items()
        clocks = {name: Calibration.load(path) for name, path in specs}
        runs = load_runs(root)
        if not runs:
            raise ValueError(f"no finished runs under {root}")
        ttt = target_table(runs, clocks, a.target)
    except (CalibrationError, ValueError, OSError) as e:
        print(f"prsgd.plots.communicate_less: error: {e}", file=sys.stderr)
        return 2
    table = per_run(runs)
    table.to_csv(root / "runs.csv", index=False)
    (root / "runs.md").write_text(markdown(table))
    ttt.to_csv(root / "time_to_target.csv", index=False)
    (root / "time_to_target.md").write_text(
        "Measured on the lab (mean over seeds): the first epoch at or below the target loss, "
        "the seconds and MB sent per worker by its end. `modelled_s` columns are MODELLED: "
        "that many epochs at paper scale on a clock preset (prsgd/plots/communicate_less.py)."
        "\n" + "".join(f"\n## Target {g.target_loss.iloc[0]:.4f}: {what}\n\n"
                       + markdown(g.drop(columns="target"))
                       for what, g in ttt.groupby("target", sort=False)))
    print(table.to_string(index=False))
    print(ttt.to_string(index=False))
    for path in style.save(figure(runs, root), root / "communicate_less", ("png", "pdf")):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
