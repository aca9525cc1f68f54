"""`python -m prsgd.mpi_sweep`: the entry point of prsgd.experiments.mpi_sweep."""
import sys

from prsgd.experiments.mpi_sweep import main

if __name__ == "__main__":
    sys.exit(main())
