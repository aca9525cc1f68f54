#!/usr/bin/env python3
"""Entry point of `make bench`: see src/prsgd/bench.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from prsgd.bench import main  # noqa: E402

sys.exit(main())
