"""The clock against real runs: measured train_seconds next to the modelled ones.

    python -m prsgd.clock.validate --setting unshaped=RUNS_DIR,CAL.json \\
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
from prsgd.algorithms import short_label
from prsgd.clock.model import Calibration, CalibrationError, model_run
from prsgd.plots import style
from prsgd.records.results import load_run
from prsgd.records.rundir import find_runs

TOLERANCE = 0.15


def _step_seconds(df) -> float:
    r = df.iloc[-1]
    return (float(r["train_seconds"]) - float(r["comm_seconds"])) / int(r["step"])


def table(settings: dict, compute_from_other_runs: bool = False) -> pd.DataFrame:
    """settings: name -> (runs folder, calibration path). One row per run.
    `compute_from_other_runs`: instead of the calibration's compute, each run gets the median
    compute per local step measured in the OTHER runs of its setting (leave-one-out): the same
    step code on the same nodes, closer in time, so the network model is what is tested."""
    import statistics
    rows = []
    for name, (runs, cal_path) in settings.items():
        loaded = [(d, *load_run(d)) for d in find_runs(runs)]
        loaded = [(d, meta, df) for d, meta, df in loaded if not df.empty]
        steps = {d: _step_seconds(df) for d, _, df in loaded}
        for run_dir, meta, df in loaded:
            cal = Calibration.load(cal_path)
            if compute_from_other_runs:
                cal.compute_s = statistics.median(v for k, v in steps.items() if k != run_dir)
                cal.compute_per_rank = ()
            last = df.tail(1)
            m = model_run(cal, meta, last).iloc[0]
            r = last.iloc[0]
            measured = float(r["train_seconds"])
            comm = float(r.get("comm_seconds", float("nan")))
            local = float(r.get("comm_seconds_local", 0.0) or 0.0)
            model_comm = m["model_comm_global_s"] + m["model_comm_local_s"]
            rows.append({
                "setting": name, "run": run_dir.name, "label": short_label(meta["config"]),
                "steps": int(r["step"]), "rounds": int(r["rounds"]),
                "rounds_local": int(r.get("rounds_local", 0) or 0),
                "measured_s": measured, "modelled_s": float(m["model_seconds"]),
                "error": float(m["model_seconds"]) / measured - 1,
                "measured_comm_s": comm, "modelled_comm_s": float(model_comm),
                "measured_comm_local_s": local,
                # the least and the most any process spent averaging (runs since 4024faf;
                # NaN before): comm_seconds is rank 0's
                "measured_comm_min_s": float(r.get("comm_seconds_min", float("nan"))),
                "measured_comm_max_s": float(r.get("comm_seconds_max", float("nan"))),
                "modelled_comm_local_s": float(m["model_comm_local_s"]),
                "measured_compute_s": measured - comm,
                "modelled_compute_s": float(m["model_compute_s"]),
                # the parts: compute per local step (the run's own, and the calibration's) and
                # the communication model alone, against the run's comm seconds
                "measured_step_s": (measured - comm) / int(r["step"]),
                "modelled_step_s": float(m["model_compute_s"]) / int(r["step"]),
                "comm_error": float(model_comm) / comm - 1 if comm else float("nan"),
                "calibration": Path(cal_path).name,
                "compute_from": "other runs (leave-one-out)" if compute_from_other_runs
                else "calibration"})
    return pd.DataFrame(rows)


# What the clock knew of a compressed round, stage by stage (codec_effect's columns): the link's
# allreduce fit for every collective and no codec time; + the codecs' encode/decode; + the
# allgather's own fit (calibrate-network --allgather).
CODEC_STAGES = {"allreduce_fit": ("codecs", "collectives"), "with_codec": ("collectives",),
                "with_allgather_fit": ()}


def _without(doc: dict, parts: tuple) -> dict:
    """A calibration document without the codecs part and/or the per-collective fits."""
    import copy
    doc = copy.deepcopy(doc)
    if "codecs" in parts:
        doc["compute"].pop("codecs", None)
    if "collectives" in parts:
        for level in doc["network"]["levels"].values():
            level.pop("collectives", None)
    return doc


def codec_effect(runs: str, cal_path: str) -> pd.DataFrame:
    """Per run under `runs`: measured communication seconds against the clock's at each of
    CODEC_STAGES (the calibration with parts of it taken away), and the whole run's error."""
    import json
    import tempfile
    doc = json.loads(Path(cal_path).read_text())
    if not (doc.get("compute") or {}).get("codecs"):
        raise CalibrationError(f"{cal_path}: has no compute.codecs part to compare")
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage, parts in CODEC_STAGES.items():
            path = Path(tmp) / f"{stage}.json"
            path.write_text(json.dumps(_without(doc, parts)))
            tables[stage] = table({stage: (runs, str(path))})
    last = tables["with_allgather_fit"]
    t = last[["run", "label", "rounds", "measured_s", "measured_comm_s"]].copy()
    for stage, st in tables.items():
        t[f"comm_s_{stage}"] = st["modelled_comm_s"].values
        t[f"comm_error_{stage}"] = st["comm_error"].values
        t[f"error_{stage}"] = st["error"].values
    return t


def validation_set(t: pd.DataFrame) -> pd.DataFrame:
    """The rows the validation is about (issue 12): I = 1, 4, 16 and Hier-AVG."""
    return t[t["label"].isin(["I=1", "I=4", "I=16"]) | t["label"].str.startswith("Hier-AVG")]


def to_markdown(t: pd.DataFrame) -> str:
    cols = ["setting", "label", "run", "steps", "rounds", "rounds_local", "measured_s", "modelled_s",
            "error", "measured_step_s", "modelled_step_s", "measured_comm_s", "modelled_comm_s",
            "comm_error", "measured_comm_local_s", "modelled_comm_local_s"]
    fmt = lambda c, v: (f"{100 * v:+.1f}%" if c.endswith("error") else f"{v:.2f}"
                        if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(c, r[c]) for c in cols) + " |" for _, r in t.iterrows()]
    inside = (t["error"].abs() <= TOLERANCE).sum()
    lines.append(f"\n{inside} of {len(t)} predictions within {TOLERANCE:.0%} of the measurement "
                 f"(largest error {100 * t['error'].abs().max():.1f}%).")
    for name, g in t.groupby("setting", sort=False):
        lines.append(f"Setting {name}: {(g['error'].abs() <= TOLERANCE).sum()} of {len(g)} within "
                     f"{TOLERANCE:.0%} (largest error {100 * g['error'].abs().max():.1f}%).")
    core = validation_set(t)
    if len(core) < len(t):
        inside = (core["error"].abs() <= TOLERANCE).sum()
        lines.append(f"I = 1, 4, 16 and Hier-AVG (the validation's set): {inside} of {len(core)} "
                     f"within {TOLERANCE:.0%} (largest error {100 * core['error'].abs().max():.1f}%).")
    comm_in = (t["comm_error"].abs() <= TOLERANCE).sum()
    lines.append(f"Communication alone: {comm_in} of {len(t)} within {TOLERANCE:.0%} of the runs' "
                 f"comm seconds. Compute per local step: {t['measured_step_s'].min():.2f}-"
                 f"{t['measured_step_s'].max():.2f} s in the runs, "
                 f"{t['modelled_step_s'].min():.2f}-{t['modelled_step_s'].max():.2f} s calibrated.")
    return "\n".join(lines) + "\n"


def titled_markdown(t: pd.DataFrame, columns: dict) -> str:
    """`columns` (name -> title) of `t` as a markdown table, the scripts' checks' format: errors
    as signed percentages, label/run/rounds as they are, other numbers with 2 decimals."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for _, r in t.iterrows():
        cells = [f"{r[k]:+.1%}" if "error" in k else str(r[k]) if k in ("label", "run", "rounds")
                 else f"{r[k]:.2f}" for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(t: pd.DataFrame):
    """(a) total train_seconds, (b) the communication part alone: modelled against measured."""
    fig, axes = style.figure(2, height=5.4)
    for ax, (m, p, what) in zip(axes, (
            ("measured_s", "modelled_s", "(a) train_seconds"),
            ("measured_comm_s", "modelled_comm_s", "(b) communication seconds (all levels)"))):
        ok = t[(t[m] > 0) & (t[p] > 0)]
        lo = 0.8 * min(ok[m].min(), ok[p].min())
        hi = 1.25 * max(ok[m].max(), ok[p].max())
        xs = [lo, hi]
        ax.plot(xs, xs, "k-", lw=1, label="prediction = measurement")
        ax.fill_between(xs, [x * (1 - TOLERANCE) for x in xs], [x * (1 + TOLERANCE) for x in xs],
                        color="0.85", label=f"+-{TOLERANCE:.0%}")
        # colour: the link setting; marker: the variant (text labels would overlap)
        labels = sorted(dict.fromkeys(ok["label"]), key=lambda lab: (
            lab.startswith("Hier"), int(lab[2:]) if lab[2:].isdigit() else 0, lab))
        marker = {lab: "osD^v*Ph"[i % 8] for i, lab in enumerate(labels)}
        for k, (name, g) in enumerate(ok.groupby("setting", sort=False)):
            for lab, gl in g.groupby("label", sort=False):
                ax.scatter(gl[m], gl[p], color=f"C{k}", marker=marker[lab], s=36, zorder=3,
                           edgecolor="black", linewidth=0.4)
            ax.scatter([], [], color=f"C{k}", marker="s", label=f"link: {name}")
        for lab in labels:
            ax.scatter([], [], color="white", edgecolor="black", marker=marker[lab], label=lab)
        ax.set(xscale="log", yscale="log", xlim=xs, ylim=xs)
        style.title(ax, what)
        style.labels(ax, "measured seconds (real ranks, real links)",
                     "MODELLED seconds (prsgd.clock, calibrated on the lab)")
        for axis in (ax.xaxis, ax.yaxis):
            style.log_axis(axis, *xs)
        style.grid(ax)
    style.legend_below(fig, axes[0], ncols=4)     # the same settings and variants in both
    style.suptitle(fig, "The clock against the lab's runs")
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prsgd.clock.validate",
                                description=__doc__.splitlines()[0])
    p.add_argument("--setting", action="append", required=True,
                   metavar="NAME=RUNS_DIR,CALIBRATION.json")
    p.add_argument("--out", required=True)
    p.add_argument("--compute-from-other-runs", action="store_true",
                   help="also the leave-one-out variant: each run's compute per step = the "
                        "median of the other runs' (written as table_loo.*)")
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
        print(f"prsgd.clock.validate: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(to_markdown(t))
    fig = figure(t)
    style.save(fig, out / "predicted_vs_measured", ("png", "pdf"))
    print(to_markdown(t))
    if a.compute_from_other_runs:
        loo = table(settings, compute_from_other_runs=True)
        loo.to_csv(out / "table_loo.csv", index=False)
        (out / "table_loo.md").write_text(to_markdown(loo))
        print("compute per step from the other runs (leave-one-out):\n" + to_markdown(loo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
