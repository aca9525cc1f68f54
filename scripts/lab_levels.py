#!/usr/bin/env python3
"""The measured lab runs as a table: seconds per epoch, and the communication of each run split by
level (global rounds across nodes; Hier-AVG's local rounds inside a node), with the machine's load
while each run ran (the lab shares its machine).

    python scripts/lab_levels.py results/figure3-lab     # -> levels.{csv,md,png} there

Reads every run under DIR (the sweep directories written by scripts/lab_sweep.sh), the sweeps'
manifest.json for when each run ran, and DIR/load.txt (one `time load1 load5 load15` line per
5 s). Counters are rank 0's (metrics.csv): comm_seconds = all its time inside averaging
allreduces (including waits for slower ranks), comm_seconds_local = the local level's part.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import pandas as pd  # noqa: E402

from prsgd.plots import style  # noqa: E402
from prsgd.plots.clock import lab_note  # noqa: E402
from prsgd.records.results import load_run  # noqa: E402
from prsgd.records.rundir import find_runs  # noqa: E402


def load_samples(path: Path) -> list[tuple[datetime, float]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out.append((datetime.fromisoformat(parts[0].replace("Z", "+00:00")),
                            float(parts[1])))
    return out


def run_times(root: Path) -> dict[str, tuple[datetime, datetime]]:
    """(started, finished) of each run, by its run directory, from the sweeps' manifests."""
    out = {}
    for manifest in root.rglob("manifest.json"):
        for r in json.loads(manifest.read_text()).get("runs", []):
            if r.get("started") and r.get("finished") and r.get("run_dir"):
                key = str((manifest.parent / r["run_dir"]).resolve())
                out[key] = (datetime.strptime(r["started"], "%Y-%m-%dT%H:%M:%S%z"),
                            datetime.strptime(r["finished"], "%Y-%m-%dT%H:%M:%S%z"))
    return out


def table(root: Path) -> pd.DataFrame:
    samples, times = load_samples(root / "load.txt"), run_times(root)
    rows = []
    for run_dir in find_runs(root):
        meta, m = load_run(run_dir)
        if m.empty:
            continue
        cfg, last = meta["config"], m.iloc[-1]
        local_s, local_n = float(last.get("comm_seconds_local", 0) or 0), int(last["rounds_local"])
        global_s, global_n = float(last["comm_seconds"]) - local_s, int(last["rounds"])
        t = times.get(str(run_dir.resolve()))
        load = [v for when, v in samples if t and t[0] <= when <= t[1]]
        rows.append({
            "run": _name(cfg), "seed": cfg["seed"], "epochs": int(last["epoch"]),
            "steps": int(last["step"]),
            "s_per_epoch": float(last["train_seconds"]) / int(last["epoch"]),
            "train_seconds": float(last["train_seconds"]),
            "compute_seconds": float(last["compute_seconds"]),
            "global_rounds": global_n, "global_comm_s": global_s,
            "s_per_global_round": global_s / global_n if global_n else float("nan"),
            "local_rounds": local_n, "local_comm_s": local_s,
            "s_per_local_round": local_s / local_n if local_n else float("nan"),
            "final_train_loss": float(last["train_loss"]),
            "started": t[0].strftime("%H:%M:%S") if t else "",
            "load1_mean": sum(load) / len(load) if load else float("nan"),
            "load1_max": max(load) if load else float("nan"),
        })
    df = pd.DataFrame(rows)
    if df.empty:                # nothing to sort (main says so in one line)
        return df
    order = lambda s: s.map(lambda r: (r.startswith("Hier"), int(r.split("=")[1].split()[0])))
    return df.sort_values(["run", "seed"], key=lambda s: order(s) if s.name == "run" else s) \
        .reset_index(drop=True)


def figure(root: Path, df: pd.DataFrame):
    """(a) training loss against measured seconds, every run including Hier-AVG (plot_figure3.py
    draws PR-SGD alone); (b) measured seconds per averaging round, by level."""
    fig, (a, b) = style.figure(2, width=14, height=5.2)
    for run_dir in sorted(find_runs(root), key=lambda d: _key(load_run(d)[0])):
        meta, m = load_run(run_dir)
        if m.empty:
            continue
        name, seed = _name(meta["config"]), meta["config"]["seed"]
        # the interval's colour of every other figure; Hier-AVG one of its own
        colour = HIER_COLOUR if meta["config"]["algorithm"] == "hier" else \
            style.interval_color(meta["config"]["interval"])
        a.plot(m["train_seconds"], m["train_loss"], ("-", "--", ":", "-.")[seed % 4],
               color=colour, marker="o", ms=3, label=f"{name} (seed {seed})")
    a.set_yscale("log")
    style.log_axis(a.yaxis, *a.get_ylim())
    style.labels(a, "measured training wall-clock (s, rank 0, evaluation excluded)",
                 "training loss (log scale)")
    style.title(a, "(a) loss vs measured time, every run")
    style.legend_outside(a, fontsize=7)
    style.grid(a)
    per = df.groupby("run", sort=False)[["s_per_global_round", "s_per_local_round"]].mean()
    x = range(len(per))
    b.bar([i - 0.2 for i in x], per["s_per_global_round"], 0.4, label="global round (all ranks, "
          "across the node links)")
    b.bar([i + 0.2 for i in x], per["s_per_local_round"].fillna(0), 0.4,
          label="local round (Hier-AVG: a node's 2 ranks)")
    b.set_xticks(list(x), per.index, rotation=20, fontsize=8)
    style.labels(b, ylabel="measured seconds per averaging round (rank 0)")
    style.title(b, "(b) cost of a round, by level")
    b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.25))   # under the names
    what = lab_note(root) or str(root)       # the same line panel (b) of figure3.png carries
    style.suptitle(fig, f"{what[:1].upper()}{what[1:]}; the machine's load per run in levels.md")
    return fig


HIER_COLOUR = "C9"     # not one of style.INTERVAL_ORDER's first colours


def _name(cfg: dict) -> str:
    from prsgd.algorithms import short_label
    return short_label(cfg)


def _key(meta: dict):
    cfg = meta["config"]
    return (cfg["algorithm"] == "hier", cfg["interval"], cfg["seed"])


def markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else (
        f"{v:.1f}" if isinstance(v, float) else str(v))
    return head + "".join("| " + " | ".join("n/a" if isinstance(v, float) and v != v else fmt(v)
                                            for v in row) + " |\n" for row in df.itertuples(False))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: scripts/lab_levels.py DIR (a folder of lab sweeps)", file=sys.stderr)
        return 2
    root = Path(argv[0])
    from prsgd.records.rundir import RecordError
    try:
        df = table(root)
    except (RecordError, OSError, ValueError) as e:   # a run record it cannot read
        print(f"lab_levels: error: {root}: {e}", file=sys.stderr)
        return 2
    if df.empty:
        print(f"lab_levels: error: no runs with metrics under {root}", file=sys.stderr)
        return 2
    df.to_csv(root / "levels.csv", index=False)
    (root / "levels.md").write_text(markdown(df))
    style.save(figure(root, df), root / "levels.png")
    print(markdown(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
