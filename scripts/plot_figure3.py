#!/usr/bin/env python3
"""Figure 3 and the summary table from a sweep directory: see `--help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from prsgd.plots.figure3 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
