"""`python -m prsgd.clock`: the entry point of prsgd.clock.model."""
import sys

from prsgd.clock.model import main

sys.exit(main())
