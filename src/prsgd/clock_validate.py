"""The clock against real runs: measured train_seconds next to the modelled ones.

    python -m prsgd.clock_validate --setting unshaped=RUNS_DIR,CAL.json \\
        --setting shaped-50mbit=RUNS_DIR,CAL.json --out results/wallclock/validation

For every run directory under each RUNS_DIR: its last row's measured train_seconds and comm
seconds (all levels, and Hier-AVG's local level), and what the setting's calibration predicts
for the same local steps and rounds. Writes table.csv / table.md and a predicted-vs-measured
figure (predicted_vs_measured.png/.pdf) with the +-15 % band; `table()` is what the tests
recompute from the committed runs and calibrations.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from .clock import Calibration, CalibrationError, model_run
from .results import find_runs, load_run

TOLERANCE = 0.15


def run_label(cfg: dict) -> str:
    if cfg.get("algorithm") == "hier":
        return (f"Hier-AVG S={cfg.get('group_size')} K1={cfg.get('interval')} "
                f"K2={cfg.get('global_every')}")
    return f"I={cfg.get('interval')}"


def table(settings: dict) -> pd.DataFrame:
    """settings: name -> (runs folder, calibration path). One row per run."""
    rows = []
    for name, (runs, cal_path) in settings.items():
        cal = Calibration.load(cal_path)
        for run_dir in find_runs(runs):
            meta, df = load_run(run_dir)
            if df.empty:
                continue
            last = df.tail(1)
            m = model_run(cal, meta, last).iloc[0]
            r = last.iloc[0]
            measured = float(r["train_seconds"])
            comm = float(r.get("comm_seconds", float("nan")))
            local = float(r.get("comm_seconds_local", 0.0) or 0.0)
            model_comm = m["model_comm_global_s"] + m["model_comm_local_s"]
            rows.append({
                "setting": name, "run": run_dir.name, "label": run_label(meta["config"]),
                "steps": int(r["step"]), "rounds": int(r["rounds"]),
                "rounds_local": int(r.get("rounds_local", 0) or 0),
                "measured_s": measured, "modelled_s": float(m["model_seconds"]),
                "error": float(m["model_seconds"]) / measured - 1,
                "measured_comm_s": comm, "modelled_comm_s": float(model_comm),
                "measured_comm_local_s": local,
                "modelled_comm_local_s": float(m["model_comm_local_s"]),
                "measured_compute_s": measured - comm, "modelled_compute_s": float(m["model_compute_s"]),
                "calibration": Path(cal_path).name})
    return pd.DataFrame(rows)


def to_markdown(t: pd.DataFrame) -> str:
    cols = ["setting", "label", "steps", "rounds", "rounds_local", "measured_s", "modelled_s",
            "error", "measured_comm_s", "modelled_comm_s", "measured_comm_local_s",
            "modelled_comm_local_s"]
    fmt = lambda c, v: (f"{100 * v:+.1f}%" if c == "error" else f"{v:.2f}"
                        if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(c, r[c]) for c in cols) + " |" for _, r in t.iterrows()]
    inside = (t["error"].abs() <= TOLERANCE).sum()
    lines.append(f"\n{inside} of {len(t)} predictions within {TOLERANCE:.0%} of the measurement "
                 f"(largest error {100 * t['error'].abs().max():.1f}%).")
    return "\n".join(lines) + "\n"


def figure(t: pd.DataFrame):
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    lo = 0.8 * min(t["measured_s"].min(), t["modelled_s"].min())
    hi = 1.25 * max(t["measured_s"].max(), t["modelled_s"].max())
    xs = [lo, hi]
    ax.plot(xs, xs, "k-", lw=1, label="prediction = measurement")
    ax.fill_between(xs, [x * (1 - TOLERANCE) for x in xs], [x * (1 + TOLERANCE) for x in xs],
                    color="0.85", label=f"+-{TOLERANCE:.0%}")
    for k, (name, g) in enumerate(t.groupby("setting", sort=False)):
        ax.scatter(g["measured_s"], g["modelled_s"], color=f"C{k}", label=name, zorder=3)
        for _, r in g.iterrows():
            ax.annotate(r["label"], (r["measured_s"], r["modelled_s"]), fontsize=7,
                        xytext=(4, -3), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlim=xs, ylim=xs,
           xlabel="measured train_seconds (real ranks, real links)",
           ylabel="MODELLED train_seconds (prsgd.clock, calibrated on the lab)",
           title="The clock against the lab's runs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prsgd.clock_validate",
                                description=__doc__.splitlines()[0])
    p.add_argument("--setting", action="append", required=True,
                   metavar="NAME=RUNS_DIR,CALIBRATION.json")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        settings = {}
        for spec in a.setting:
            name, eq, rest = spec.partition("=")
            runs, comma, cal = rest.partition(",")
            if not (eq and comma):
                raise ValueError(f"--setting {spec!r}: expected NAME=RUNS_DIR,CALIBRATION.json")
            settings[name] = (runs, cal)
        t = table(settings)
        if t.empty:
            raise ValueError("no run directories with metrics under the given folders")
    except (CalibrationError, ValueError, FileNotFoundError) as e:
        print(f"prsgd.clock_validate: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(to_markdown(t))
    fig = figure(t)
    for ext in ("png", "pdf"):
        fig.savefig(out / f"predicted_vs_measured.{ext}", dpi=150)
    print(to_markdown(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
