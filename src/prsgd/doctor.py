"""`python -m prsgd.doctor`: the entry point of prsgd.install.doctor."""
import sys

from prsgd.install.doctor import main

if __name__ == "__main__":
    sys.exit(main())
