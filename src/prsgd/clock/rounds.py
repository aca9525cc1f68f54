"""How many averaging rounds the clock costs, epoch by epoch, for a run's config.json.

A measured run is costed from the rounds it recorded (`model.model_run` reads metrics.csv's
counters, whatever the algorithm). A run modelled WITHOUT being made (another scale, before
running it) needs its rounds from somewhere else:

- an algorithm whose rounds are a function of its config replays its own schedule
  (`Algorithm.make_schedule`, the same object the training loop asks), so a new fixed schedule
  needs no edit here;
- an algorithm whose rounds depend on the run (`Algorithm.rounds_from_run`: AdaComm's interval
  follows the training loss) cannot be replayed: the clock takes the rounds per epoch that a
  measured run of it recorded in metrics.csv, and says so when it has none.

    epoch_rounds(meta)               # replayed
    epoch_rounds(meta, metrics)      # an adaptive schedule: the measured run's rounds
    model_epochs(cal, meta, metrics) # modelled cumulative seconds per epoch
"""
from __future__ import annotations

from prsgd.clock.checks import CalibrationError
from prsgd.core.schedule import GLOBAL, LOCAL


def _algorithm(meta: dict):
    from prsgd.algorithms import algorithm_class
    from prsgd.core.config import Config
    cfg = Config.from_dict(meta["config"])
    d = meta.get("derived", {})
    return algorithm_class(cfg.algorithm)(
        cfg, workers=int(d["workers"]), local_workers=[0], steps_per_epoch=int(d["steps_per_epoch"]),
        total_steps=int(d["total_steps"]), backend=cfg.backend)


def epoch_rounds(meta: dict, metrics=None) -> list[dict]:
    """Per epoch of the run `meta` (config.json) describes: `epoch`, `step` (local steps done)
    and the cumulative `rounds` / `rounds_local`. Replayed from the algorithm's schedule, or,
    when its rounds depend on the run, read from `metrics` (that run's metrics.csv frame)."""
    from prsgd.algorithms import algorithm_class
    name = meta["config"].get("algorithm", "prsgd")
    if algorithm_class(name).rounds_from_run:
        if metrics is None or len(metrics) == 0:
            raise CalibrationError(f"--algorithm {name}: its rounds depend on the run (its "
                                   "schedule follows the training), so the clock needs a measured "
                                   "run's metrics.csv to count them; it cannot replay them")
        return [{"epoch": int(r["epoch"]), "step": int(r["step"]), "rounds": int(r["rounds"]),
                 "rounds_local": int(r.get("rounds_local", 0) or 0)}
                for _, r in metrics.iterrows()]
    algo = _algorithm(meta)
    if algo.counts_rounds:   # Algorithm 3: epochs of shared rounds, steps per worker differ
        raise CalibrationError(f"--algorithm {name}: its epochs are counted in rounds, not "
                               "local steps; the clock counts them from a measured run only")
    rows, counts, step = [], {GLOBAL: 0, LOCAL: 0}, 0
    loop = _Loop()
    for epoch in range(algo.num_epochs):
        loop.epoch = epoch
        end = algo.epoch_end(loop)
        for t in range(step + 1, end + 1):
            for e in algo.schedule.events(t, 0):
                counts[e.level] += 1
        step = end
        rows.append({"epoch": epoch + 1, "step": step, "rounds": counts[GLOBAL],
                     "rounds_local": counts[LOCAL]})
    return rows


class _Loop:
    """What `Algorithm.epoch_end` reads of the loop (epochs counted in local steps)."""
    epoch = 0


def model_epochs(cal, meta: dict, metrics=None) -> list[dict]:
    """Modelled cumulative seconds at the end of each epoch (`model.model_counts`, each round
    the run's payload from its config), with the rounds `epoch_rounds` counts."""
    from prsgd.clock.model import RunShape, model_counts
    shape = RunShape.from_config(meta)
    return [dict(r, **model_counts(cal, shape, r["step"], r["rounds"], r["rounds_local"]))
            for r in epoch_rounds(meta, metrics)]
