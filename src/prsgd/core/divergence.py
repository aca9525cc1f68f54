"""A run that diverged: which runs, which worker, which step first saw a non-finite loss."""
from __future__ import annotations

import math


class Diverged(RuntimeError):
    """A non-finite training loss; `runs`: the indices of the packed runs that diverged."""

    def __init__(self, message: str, runs=()):
        super().__init__(message)
        self.runs = list(runs)


def check_finite(results, first_bad_steps: list[int], loop, runs, workers: int) -> None:
    """Raise Diverged when a run's epoch loss is not finite. `results`: (loss, acc) per packed
    run; `first_bad_steps[c * N + w]`: the first step with a non-finite loss of worker w of run c
    (0: none), so the message says where it started, not only where it was seen."""
    loss = next((l for l, _ in results if not math.isfinite(l)), results[0][0])
    if math.isfinite(loss):
        return
    first = min((s, w) for w, s in enumerate(first_bad_steps) if s) \
        if any(first_bad_steps) else (loop.step, None)
    bad = [k for k, (l, _) in enumerate(results) if not math.isfinite(l)]
    where = ""
    if len(runs) > 1:   # packed sweep: say which runs diverged (the others stop too)
        where = f" of run(s) {', '.join(runs[k].run_id for k in bad)}"
        if first[1] is not None:
            first = (first[0], f"{first[1] % workers} of {runs[first[1] // workers].run_id}")
    raise Diverged(f"training loss is {loss} in epoch {loop.epoch}{where}: first "
                   f"non-finite loss at step {first[0]} (worker {first[1]}); the run "
                   f"stopped at step {loop.step}", runs=bad)
