"""`python -m prsgd.clock`: the entry point (prsgd.clock.cli)."""
import sys

from prsgd.clock.cli import main

sys.exit(main())
