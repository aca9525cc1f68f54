"""Compressed averaging against raising I (issue 19 §8): training loss and test accuracy against
epochs and against the bytes each worker sent, for runs that differ in `--compressor` and
`--interval`. Reads run directories (config.json + metrics.csv) through `results.load_run`.

    python -m prsgd.plots.compression results/compress-cpu   # -> compression.png, summary.csv

Bytes are the payload bytes one worker handed to the round's collectives (metrics.csv `bytes`:
backends/base.py `Counters`), the same number on a packed run as on real ranks. The packed
backend averages in memory, so these runs say nothing about time: that needs a real link.
"""
from __future__ import annotations

import sys

from prsgd.plots import style
from prsgd.plots.family import describe, label, table_and_figure_main


def summary(runs) -> "pandas.DataFrame":
    """One row per run: its last epoch's loss and accuracy, its bytes, and the bytes relative to
    the uncompressed run at the smallest interval (the baseline every variant saves against)."""
    import pandas as pd
    rows = []
    for name, cfg, df in runs:
        c, last = cfg["config"], df.iloc[-1]
        rows.append({"run": name, "label": label(cfg), "interval": c["interval"],
                     "compressor": c.get("compressor", "none"),
                     "error_feedback": c.get("error_feedback", True),
                     "epochs": int(last.epoch), "rounds": int(last.rounds),
                     "MB_sent": round(last.bytes / 1e6, 3),
                     "MB_received": round(last.get("bytes_received", last.bytes) / 1e6, 3),
                     "train_loss": round(last.train_loss, 4),
                     "test_acc": round(last.get("test_acc", float("nan")), 4)})
    table = pd.DataFrame(rows)
    base = table[table.compressor == "none"].sort_values("interval")
    if len(base):
        table["bytes_vs_baseline"] = (table.MB_sent / base.iloc[0].MB_sent).round(4)
    return table


def compression_figure(runs):
    """(a) training loss per epoch, (b) training loss and (c) test accuracy against MB sent."""
    fig, (a, b, c) = style.figure(3, width=19, height=5.4)
    looks = style.variant_styles(label(cfg) for _, cfg, _ in runs)
    for _, cfg, df in runs:
        lab = label(cfg)
        mb = df.bytes / 1e6
        a.plot(df.epoch, df.train_loss, ms=5, label=lab, **looks[lab])
        b.plot(mb, df.train_loss, ms=5, label=lab, **looks[lab])
        if "test_acc" in df:
            c.plot(mb, df.test_acc, ms=5, label=lab, **looks[lab])
    style.labels(a, "epoch", "training loss (mean of the epoch's mini-batches)")
    style.title(a, "(a) per epoch: the cost in loss")
    for ax in (b, c):
        ax.set_xscale("log")
    style.labels(b, "MB sent per worker so far (log scale)", "training loss")
    style.title(b, "(b) per byte: what the loss costs on the wire")
    style.labels(c, "MB sent per worker so far (log scale)", "test accuracy of the averaged model")
    style.title(c, "(c) test accuracy per byte")
    style.legend_outside(c, title="run")
    for ax in (a, b, c):
        style.grid(ax)
    style.note(a, "packed backend: averages in memory, so no time axis here (time needs a "
                  "real link)", loc="upper right")
    style.suptitle(fig, f"Compressing the averages vs raising I ({describe(runs)})")
    return fig


def main(argv=None) -> int:
    return table_and_figure_main(argv, prog="python -m prsgd.plots.compression",
                                 description=__doc__.split("\n")[0], png="compression.png",
                                 summary=summary, figure=compression_figure,
                                 who="plots.compression")


if __name__ == "__main__":
    sys.exit(main())
