"""`python -m prsgd.lab`: the entry point of prsgd.lab.cli."""
import sys

from prsgd.lab.cli import main

sys.exit(main())
