"""`python -m prsgd.supervise`: the entry point of prsgd.launch.supervise."""
import sys

from prsgd.launch.supervise import main

if __name__ == "__main__":
    sys.exit(main())
