"""Figure 3's wall-clock, measured or modelled, and the time-to-target figure.

A sweep's panel (b) plots training loss against a clock: `measured` (each run's own
`train_seconds`: real ranks, real links) or a calibration file (`prsgd.clock`: the run's local
steps and averaging rounds costed on a named machine). A modelled clock says so on the figure.

    python -m prsgd.plots.clock time-to-target results/figure3-h100-packed/sweep \\
        --out results/figure3-h100-packed \\
        --clock "NVLink box=results/wallclock/calibration/h100-nvlink-box.json" ...

draws, for each network, the modelled time each interval I needs to reach a target training loss
(by default I = 1's loss at 90% of training) against I.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
from prsgd.records import rundir
from prsgd.clock.model import Calibration, CalibrationError, model_run
from prsgd.plots import style

MEASURED = "measured"


def load_clock(spec) -> Calibration | None:
    """`measured` (None) or a calibration file."""
    if spec is None or isinstance(spec, Calibration):
        return spec
    return None if str(spec) == MEASURED else Calibration.load(spec)


def with_clock(df: pd.DataFrame, cal: Calibration | None) -> pd.DataFrame:
    """df plus `clock_seconds`: train_seconds (measured) or the modelled cumulative seconds of
    each run's epochs (and the model_* columns behind them)."""
    out = df.copy()
    out.attrs = df.attrs
    if cal is None:
        out["clock_seconds"] = out["train_seconds"]
        return out
    configs = df.attrs.get("configs", {})
    parts = []
    for rid, g in out.groupby("run_id", sort=False):
        if rid not in configs:
            raise CalibrationError(f"run {rid}: no {rundir.CONFIG} to model its clock from")
        parts.append(model_run(cal, configs[rid], g))
    model = pd.concat(parts) if parts else pd.DataFrame(index=out.index)
    out = out.join(model)
    out.attrs = df.attrs
    out["clock_seconds"] = out["model_seconds"]
    return out


def contended_cpu(df: pd.DataFrame) -> str | None:
    """A line for runs whose clock is CPU ranks outnumbering the cores they ran on."""
    for meta in df.attrs.get("configs", {}).values():
        prov = meta.get("provenance", {})
        ranks, cores = prov.get("world_size") or 1, prov.get("cpu_count") or 0
        devices = " ".join(map(str, prov.get("devices") or []))
        if meta["config"].get("backend") == "horovod" and devices.startswith("cpu") and \
                cores and ranks > cores:
            return (f"measured clock: {ranks} CPU ranks contending for {cores} cores, "
                    "not the cost of communication")
    return None


def lab_note(sweep_dir) -> str | None:
    """The lab's settings (the `lab.json` that scripts/lab_sweep.sh writes beside the sweep), as
    one line: what the measured clock of these runs is."""
    import json
    for d in (Path(sweep_dir), Path(sweep_dir).parent):
        try:
            lab = json.loads((d / "lab.json").read_text())
        except (OSError, ValueError):
            continue
        rate = lab.get("rate") or "none"
        m = re.fullmatch(r"([\d.]+)([kmg]?)bit", str(rate).lower())
        speed = f"{m.group(1)} {m.group(2).upper()}bit/s" if m else str(rate)
        link = "unshaped links" if rate == "none" else f"links shaped to {speed} (tc tbf)"
        return (f"measured on the lab: {lab.get('nodes')} nodes x {lab.get('slots')} Horovod "
                f"ranks (network namespaces on one machine, {lab.get('cpus_per_node')} CPU core(s) "
                f"per node) over {link}, no added delay")
    return None


def clock_note(df: pd.DataFrame, cal: Calibration | None, sweep_dir=None) -> str | None:
    """What panel (b)'s clock is, written on the panel itself."""
    if cal is not None:
        return f"modelled: {cal.name}"
    return (lab_note(sweep_dir) if sweep_dir else None) or contended_cpu(df)


# --- time to target -----------------------------------------------------------------------------
def target_loss(df: pd.DataFrame, frac: float = 0.9, interval: int = 1) -> tuple[float, int]:
    """I = `interval`'s training loss (mean over seeds) at `frac` of its epochs, and that epoch."""
    ref = df[df["interval"] == interval]
    if ref.empty:
        raise ValueError(f"no run with I = {interval} to take the target loss from")
    epoch = max(1, round(frac * int(ref["epoch"].max())))
    return float(ref[ref["epoch"] == epoch]["train_loss"].mean()), epoch


def time_to_target(df: pd.DataFrame, clocks: dict, target: float) -> pd.DataFrame:
    """Per clock and interval: the first epoch whose training loss (mean over seeds) is at or
    below `target`, and the modelled seconds at the end of that epoch (NaN: never reached)."""
    rows = []
    for name, cal in clocks.items():
        timed = with_clock(df, cal)
        for interval, g in timed.groupby("interval"):
            per_epoch = g.groupby("epoch").agg(loss=("train_loss", "mean"),
                                               seconds=("clock_seconds", "mean"))
            hit = per_epoch[per_epoch["loss"] <= target]
            first = int(hit.index.min()) if len(hit) else None
            rows.append({"clock": name, "interval": int(interval), "target_loss": target,
                         "epoch": first, "seconds": float(hit["seconds"].iloc[0]) if first
                         else float("nan")})
    return pd.DataFrame(rows)


def reachable_target(df: pd.DataFrame) -> float:
    """The lowest loss every interval reaches: the largest of their final losses."""
    last = df[df["epoch"] == df.groupby("interval")["epoch"].transform("max")]
    return float(last.groupby("interval")["train_loss"].mean().max())


def time_to_target_figure(panels: list, title: str = ""):
    """One panel per (table, description of the target)."""
    fig, axes = style.figure(len(panels), height=5.0)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (table, what) in zip(axes, panels):
        intervals = sorted(table["interval"].unique())
        looks = style.variant_styles(table["clock"].unique())
        for name, g in table.groupby("clock", sort=False):
            g = g.sort_values("interval")
            ax.plot(g["interval"], g["seconds"], label=name, ms=5, **looks[name])
        missing = sorted(table.loc[table["seconds"].isna(), "interval"].unique())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        style.log2_axis(ax.xaxis, intervals)
        style.log_axis(ax.yaxis, *ax.get_ylim())
        style.labels(ax, "averaging interval I (local steps between averages)",
                     "MODELLED seconds to reach the target (log scale)")
        style.title(ax, f"target: training loss {table['target_loss'].iloc[0]:.4g} ({what})")
        if missing:
            ax.text(0.99, 0.01, "never reached by I = " + ", ".join(map(str, missing)),
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
        style.grid(ax)
    # every panel draws the same networks: one legend under them
    style.legend_below(fig, axes[0], ncols=3, title="network (modelled)")
    style.suptitle(fig, title or "Time to a target training loss against I: MODELLED clock "
                   "(committed H100 step time + network presets, prsgd.clock)",
                   color=style.NOTE_COLOR)
    return fig


def main(argv=None) -> int:
    from prsgd.plots.figure3 import select
    from prsgd.records.results import load_sweep
    p = argparse.ArgumentParser(prog="python -m prsgd.plots.clock",
                                description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time-to-target", help="modelled time to a target loss against I")
    t.add_argument("sweep")
    t.add_argument("--clock", action="append", required=True, metavar="LABEL=CALIBRATION.json")
    t.add_argument("--frac", type=float, default=0.9, help="target: I = 1's loss at this "
                   "fraction of training (default 0.9)")
    t.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        clocks = {}
        for spec in a.clock:
            label, eq, path = spec.partition("=")
            if not eq:
                raise ValueError(f"--clock {spec!r}: expected LABEL=PATH")
            clocks[label] = Calibration.load(path)
        df = select(load_sweep(a.sweep))
        target, epoch = target_loss(df, a.frac)
        panels = [(time_to_target(df, clocks, target),
                   f"I = 1's loss at epoch {epoch}, {a.frac:.0%} of training"),
                  (time_to_target(df, clocks, reachable_target(df)),
                   "the lowest loss every I reaches: the largest final loss")]
    except (CalibrationError, ValueError, FileNotFoundError) as e:
        print(f"prsgd.plots.clock: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = time_to_target_figure(panels)
    table = pd.concat([t.assign(target=what) for t, what in panels], ignore_index=True)
    style.save(fig, out / "time_to_target", ("png", "pdf"))
    table.to_csv(out / "time_to_target.csv", index=False)
    for f in ("time_to_target.png", "time_to_target.pdf", "time_to_target.csv"):
        print(out / f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
