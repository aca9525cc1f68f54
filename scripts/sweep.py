#!/usr/bin/env python3
"""Run one training run per averaging interval: see `python scripts/sweep.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from prsgd.experiments.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
