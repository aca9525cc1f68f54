"""Communication backends: `base.Comm` (the interface) and one module per backend."""
from .base import (BACKENDS, Comm, Counters, backend_class, make_comm, packing_backend,
                   sweepable_backends, times_rounds)

__all__ = ["BACKENDS", "Comm", "Counters", "backend_class", "make_comm", "packing_backend",
           "sweepable_backends", "times_rounds"]
