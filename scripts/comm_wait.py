"""How much of a run's measured communication time is waiting for the slowest worker?

The clock models a round as its collectives (clock/collectives.py) and books a slow worker's
lateness under compute (the round starts when the slowest worker is done). A run's `comm_seconds`
are rank 0's: its collectives AND its wait for the last worker to arrive. `comm_seconds_min` is
the process that spent least in averaging, the one that arrived last most often: an upper bound
on the collectives alone (it too waits in the rounds where it is not last). Writes RUNS/comm_wait.{csv,md}: per run the clock's
communication seconds against both, and the whole run's error.

    python scripts/comm_wait.py results/comm-wait-lab results/wallclock/calibration/lab-wait-50mbit.json
"""
import sys
from pathlib import Path

import pandas as pd

from prsgd.clock.validate import table, titled_markdown

COLUMNS = {"label": "variant", "run": "run", "rounds": "rounds",
           "measured_comm_s": "comm s, rank 0", "measured_comm_min_s": "comm s, least process",
           "wait_s": "most - least", "modelled_comm_s": "clock's comm s",
           "comm_error": "clock vs rank 0", "comm_error_vs_min": "clock vs least",
           "error": "whole run: clock vs measured"}


def comm_wait(runs: str, cal: str) -> pd.DataFrame:
    """validate.table's rows for the runs under `runs` (as calibrated), with the gap between
    the most and the least any process spent averaging, and the clock against the least."""
    t = table({"wait": (runs, cal)})
    if t["measured_comm_min_s"].isna().any():
        raise ValueError(f"{runs}: runs without comm_seconds_min (made before it was recorded)")
    t["wait_s"] = t["measured_comm_max_s"] - t["measured_comm_min_s"]
    t["comm_error_vs_min"] = t["modelled_comm_s"] / t["measured_comm_min_s"] - 1
    keep = ["label", "run", "rounds", "measured_s", "modelled_s", "error", "measured_comm_s",
            "measured_comm_min_s", "measured_comm_max_s", "wait_s", "modelled_comm_s",
            "comm_error", "comm_error_vs_min", "calibration"]
    return t[keep].sort_values(["label", "run"]).reset_index(drop=True)


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    runs, cal = argv
    t = comm_wait(runs, cal)
    t.to_csv(Path(runs) / "comm_wait.csv", index=False)
    (Path(runs) / "comm_wait.md").write_text(titled_markdown(t, COLUMNS))
    print(titled_markdown(t, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
