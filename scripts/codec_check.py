"""Does the compressors' encode/decode time explain what compressed rounds take beyond their
collectives? Writes RUNS/codec_check.{csv,md}: per run the measured communication seconds and
the clock's without and with the calibration's codec part (prsgd.clock.validate.codec_effect).

    python scripts/codec_check.py results/codec-lab results/wallclock/calibration/lab-codec-50mbit.json
"""
import sys
from pathlib import Path

from prsgd.clock.validate import codec_effect

COLUMNS = {"label": "variant", "run": "run", "rounds": "rounds",
           "measured_comm_s": "comm s measured", "modelled_comm_s_no_codec": "clock, no codec",
           "codec_s": "+ codec", "modelled_comm_s": "clock, with codec",
           "comm_error_no_codec": "comm error, no codec", "comm_error": "comm error, with codec",
           "error_no_codec": "run error, no codec", "error": "run error, with codec"}


def markdown(t) -> str:
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    for _, r in t.sort_values(["label", "run"]).iterrows():
        cells = [f"{r[k]:+.1%}" if "error" in k else str(r[k]) if k in ("label", "run", "rounds")
                 else f"{r[k]:.2f}" for k in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
