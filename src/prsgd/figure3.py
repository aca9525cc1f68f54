"""Figure 3 of the paper (ResNet20 / CIFAR-10, PR-SGD for several I) from a set of run dirs.

A minimal stand-alone writer used for the packed GPU sweep, kept apart from the sweep driver's
own plotting (issue 3), which was not on main when this ran. It reads only run directories
(`config.json` + `metrics.csv`), so it does not care which backend produced them.

    python -m prsgd.figure3 RUN_DIR... --out results/figure3 [--note TEXT]

Writes: figure3.png (training loss and test accuracy against epochs, one curve per I),
table.md (final and best numbers per I), metrics-I{I}.csv (copies), config.json (every run's
config and provenance, plus the command and note).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .results import load_run, write_json_atomic


def load(run_dirs):
    runs = []
    for d in run_dirs:
        meta, df = load_run(d)
        runs.append((int(meta["config"]["interval"]), Path(d), meta, df))
    return sorted(runs, key=lambda r: r[0])


def table(runs) -> str:
    lines = ["| I | epochs | rounds | final train loss | final test acc | best test acc "
             "| train seconds |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for interval, _, _, df in runs:
        last = df.iloc[-1]
        lines.append(f"| {interval} | {int(last.epoch)} | {int(last.rounds)} | "
                     f"{last.train_loss:.4f} | {last.test_acc:.4f} | {df.test_acc.max():.4f} | "
                     f"{last.train_seconds:.0f} |")
    return "\n".join(lines) + "\n"


def plot(runs, path: Path, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for interval, _, _, df in runs:
        a.plot(df.epoch, df.train_loss, label=f"I = {interval}", lw=1)
        b.plot(df.epoch, df.test_acc, label=f"I = {interval}", lw=1)
    a.set(yscale="log", xlabel="epoch", ylabel="training loss (mean of mini-batch losses)")
    b.set(xlabel="epoch", ylabel="test accuracy (averaged model)", ylim=(0.5, 0.95))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write(run_dirs, out, note: str = "") -> Path:
    runs = load(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg0 = runs[0][2]
    title = (f"ResNet20, {cfg0['provenance']['dataset']['name']}, N={cfg0['derived']['workers']} "
             f"workers x batch {cfg0['config']['batch_size']}, backend {cfg0['config']['backend']}"
             f", {cfg0['config']['precision']}")
    plot(runs, out / "figure3.png", title)
    (out / "table.md").write_text(table(runs))
    for interval, d, _, _ in runs:
        shutil.copy(d / "metrics.csv", out / f"metrics-I{interval}.csv")
    write_json_atomic(out / "config.json", {
        "note": note, "command": " ".join(sys.argv),
        "runs": {f"I{interval}": meta for interval, _, meta, _ in runs}})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prsgd.figure3", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="results/figure3")
    p.add_argument("--note", default="")
    a = p.parse_args(argv)
    print(write(a.run_dirs, a.out, a.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
