"""What a run prints (rank 0, one line per event, greppable through horovodrun's prefixes; no
carriage returns): a start banner, one line per epoch with elapsed time and ETA, a resume line.
Imports nothing heavy: the sweep driver formats its times with `clock` too."""
from __future__ import annotations


def clock(seconds: float) -> str:
    """1 h 02 min, 3 min 05 s, 12 s: elapsed times and ETAs in log lines."""
    s = int(round(max(seconds, 0.0)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def eta(elapsed: float, done: int, left: int) -> str:
    """Time left at the pace so far (`done` units in `elapsed` s, `left` to go); '?' before
    the first unit."""
    return clock(elapsed / done * left) if done > 0 else "?"


def banner(parts) -> list[str]:
    """The start of a run: where it writes, what it trains, on what, with which data."""
    cfg, comm, ds = parts.cfg, parts.comm, parts.dataset
    runs = parts.runs
    where = (str(runs[0].run_dir) if len(runs) == 1 else
             f"{len(runs)} packed runs: " + ", ".join(str(r.run_dir) for r in runs))
    device = parts.device
    if device.type == "cuda":
        import torch
        device_text = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        device_text = str(device)
    tag = f"[{cfg.run_id}]"
    return [f"{tag} run directory: {where}",
            f"{tag} config: preset {cfg.preset}, algorithm {cfg.algorithm}, interval "
            f"{cfg.interval}, {runs[0].algorithm.num_epochs} epochs, {parts.total_steps} local steps, "
            f"batch {cfg.batch_size} per worker",
            f"{tag} world: backend {cfg.backend}, {parts.N} workers on {comm.size} process(es)"
            f", {parts.replicas} replica(s) here, device {device_text}",
            f"{tag} dataset: {ds.name}, {len(ds.train_y)} training and {len(ds.test_y)} test "
            f"samples" + (f" from {ds.source}" if ds.source else "")]


def epoch_line(run, loop, epochs: int, row: dict, lr: float, elapsed: float,
               epochs_done: int) -> str:
    """One epoch of one run; `elapsed`: wall seconds of this process's training so far, over
    `epochs_done` epochs (a resumed run counts from its checkpoint)."""
    test = f" test_acc {row['test_acc']:.4f}" if row.get("test_acc") is not None else ""
    return (f"[{run.run_id}] epoch {loop.epoch}/{epochs} step {loop.step} "
            f"loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}{test} lr {lr:g} "
            f"rounds {run.counters.total('rounds')} {loop.train_seconds:.1f}s "
            f"| elapsed {clock(elapsed)} ETA {eta(elapsed, epochs_done, epochs - loop.epoch)}")
