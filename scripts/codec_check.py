"""What do compressed rounds take beyond the clock's first model of their collectives? Writes
RUNS/codec_check.{csv,md}: per run the measured communication seconds and the clock's, stage by
stage (prsgd.clock.validate.CODEC_STAGES): every collective costed with the link's allreduce
fit; + the compressors' encode/decode time; + the allgather's own fit.

    python scripts/codec_check.py results/codec-lab results/wallclock/calibration/lab-codec-50mbit.json
"""
import sys
from pathlib import Path

from prsgd.clock.validate import codec_effect, titled_markdown

STAGES = {"allreduce_fit": "allreduce fit", "with_codec": "+ codec",
          "with_allgather_fit": "+ allgather fit"}
COLUMNS = {"label": "variant", "run": "run", "rounds": "rounds",
           "measured_comm_s": "comm s measured",
           **{f"comm_s_{k}": f"clock: {v}" for k, v in STAGES.items()},
           **{f"comm_error_{k}": f"comm error: {v}" for k, v in STAGES.items()},
           **{f"error_{k}": f"run error: {v}" for k, v in STAGES.items()}}


def markdown(t) -> str:
    return titled_markdown(t.sort_values(["label", "run"]), COLUMNS)


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    runs, cal = argv
    t = codec_effect(runs, cal)
    t.to_csv(Path(runs) / "codec_check.csv", index=False)
    (Path(runs) / "codec_check.md").write_text(markdown(t))
    print(markdown(t))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
