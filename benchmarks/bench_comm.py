"""What Horovod's cycle time costs an averaging round, side by side (`make bench-comm`).

Horovod's background thread looks for submitted collectives once per cycle, HOROVOD_CYCLE_TIME
milliseconds (default 1 ms in Horovod 0.28). A PR-SGD round is ONE allreduce of the flat buffer,
submitted when the local steps are done, so it waits for the next cycle: up to a whole cycle of
latency per round. With a captured GPU step of ~2 ms and I = 1 that is a large share of the step.
A shorter cycle makes that thread wake more often, which could take CPU time from the training
ranks; so each rank here alternates CPU-busy "compute" (matrix products on this core, as CPU
training does) with one in-place allreduce of a ResNet20-sized buffer, and the benchmark reports
the time per round (compute + allreduce, what sets a run's speed), the time inside the allreduce
(which with several ranks includes waiting for the slowest) and the compute time, for every
cycle time, as ratios to Horovod's default.

    python benchmarks/bench_comm.py --np 1,2 --cycle-times 0,0.1,1,5 --compute-ms 20 --rounds 100

One `horovodrun -np N --gloo` launch per (N, cycle time, repeat); the variants take turns, and each
row is the median of its repeats. JSON in results/bench/comm-<time>.json. Ratios only: absolute
times on this machine say nothing about a GPU box.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))   # run from a checkout

DEFAULT_CYCLE_MS = "1"   # Horovod 0.28.1's own default (operations.cc: SetCycleTimeMs(1))


def averaged_floats() -> int:
    """Floats one ResNet20 round averages: parameters + BN statistics (269,722 + 1,376)."""
    from prsgd.core.flat import FlatModel
    from prsgd.core.models import ResNet20
    return FlatModel(ResNet20(1)).state.numel()


def busy(ms: float, a: torch.Tensor) -> None:
    """Keep this rank's core busy for `ms` milliseconds."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        a @ a


def worker(rounds: int, warmup: int, compute_ms: float, out: str) -> None:
    from prsgd.backends.horovod import init_horovod
    torch.set_num_threads(1)
    hvd = init_horovod()
    buf = torch.randn(averaged_floats())
    a = torch.randn(64, 64)
    comm = compute = 0.0
    for r in range(warmup + rounds):
        if r == warmup:
            start = time.perf_counter()
        t0 = time.perf_counter()
        busy(compute_ms, a)
        t1 = time.perf_counter()
        hvd.allreduce_(buf, op=hvd.Average, name="avg.global")
        t2 = time.perf_counter()
        if r >= warmup:
            compute += t1 - t0
            comm += t2 - t1
    total = time.perf_counter() - start
    # Every rank's view, gathered once at the end (one collective, outside the timing).
    per_rank = hvd.allgather_object({"round_ms": 1000 * total / rounds,
                                     "comm_ms": 1000 * comm / rounds,
                                     "compute_ms": 1000 * compute / rounds}, name="bench.gather")
    if hvd.rank() == 0:
        Path(out).write_text(json.dumps({
            "cycle_time_ms": os.environ.get("HOROVOD_CYCLE_TIME", DEFAULT_CYCLE_MS),
            "ranks": hvd.size(), "rounds": rounds, "floats": buf.numel(),
            **{k: max(p[k] for p in per_rank) for k in ("round_ms", "comm_ms", "compute_ms")}})
            + "\n")


def launch(np_: int, cycle_ms: str, rounds: int, warmup: int, compute_ms: float,
           tmp: Path, timeout: float) -> dict:
    exe = shutil.which("horovodrun", path=str(Path(sys.executable).parent) + os.pathsep
                       + os.environ.get("PATH", ""))
    if exe is None:
        raise SystemExit("bench_comm: horovodrun not found (make install)")
    out = tmp / f"np{np_}-cycle-{cycle_ms}.json"
    src = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, HOROVOD_CYCLE_TIME=cycle_ms,
               PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [exe, "-np", str(np_), "--gloo", sys.executable, str(Path(__file__).resolve()), "--worker",
           "--rounds", str(rounds), "--warmup", str(warmup), "--compute-ms", str(compute_ms),
           "--worker-out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"bench_comm: {' '.join(cmd)} exited {proc.returncode}\n"
                         f"{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def run(nps: list[int], cycle_times: list[str], rounds: int, warmup: int, compute_ms: float,
        out: str | None, repeats: int = 3, timeout: float = 600) -> dict:
    import statistics
    import tempfile
    from prsgd.records.results import git_info
    if DEFAULT_CYCLE_MS not in cycle_times:
        cycle_times = [*cycle_times, DEFAULT_CYCLE_MS]   # the reference of every ratio
    runs: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):               # variants take turns: drifts in load hit all
            for n in nps:
                for c in cycle_times:
                    runs.setdefault((n, c), []).append(
                        launch(n, c, rounds, warmup, compute_ms, Path(tmp), timeout))
    keys = ("round_ms", "comm_ms", "compute_ms")
    rows = []
    for (n, c), got in runs.items():
        rows.append({**got[0], **{k: statistics.median(g[k] for g in got) for k in keys},
                     "repeats": len(got), "all": {k: [g[k] for g in got] for k in keys}})
    for r in rows:
        ref = next(x for x in rows if x["ranks"] == r["ranks"]
                   and x["cycle_time_ms"] == DEFAULT_CYCLE_MS)
        for k in keys:
            r[k.replace("_ms", "_ratio_to_default")] = r[k] / ref[k] if ref[k] else float("nan")
    report = {"rows": rows, "compute_ms_asked": compute_ms,
              "cpu": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)",
              "torch": torch.__version__, "python": platform.python_version(),
              "git": git_info(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(f"{'ranks':>5} {'cycle ms':>9} {'round ms':>9} {'x dflt':>7} {'allreduce ms':>13} "
          f"{'x dflt':>7} {'compute ms':>11} {'x dflt':>7}")
    for r in rows:
        print(f"{r['ranks']:>5} {r['cycle_time_ms']:>9} {r['round_ms']:9.3f} "
              f"{r['round_ratio_to_default']:7.3f} {r['comm_ms']:13.3f} "
              f"{r['comm_ratio_to_default']:7.2f} {r['compute_ms']:11.3f} "
              f"{r['compute_ratio_to_default']:7.3f}")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / f"comm-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        report["path"] = str(path)
        print(path)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/bench_comm.py",
                                description=__doc__.splitlines()[0])
    p.add_argument("--np", default="1,2", help="Horovod ranks (Gloo), comma-separated")
    p.add_argument("--cycle-times", default="0.1,1,5",
                   help="HOROVOD_CYCLE_TIME values in ms, comma-separated")
    p.add_argument("--rounds", type=int, default=200, help="timed rounds per cycle time")
    p.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    p.add_argument("--compute-ms", type=float, default=20.0,
                   help="CPU-busy milliseconds before each round (the local steps)")
    p.add_argument("--repeats", type=int, default=3, help="launches per variant (median)")
    p.add_argument("--out", default="results/bench", help="folder for the JSON ('' = none)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.rounds, a.warmup, a.compute_ms, a.worker_out)
        return 0
    try:
        cycles = [c.strip() for c in a.cycle_times.split(",") if c.strip()]
        if not cycles or any(float(c) < 0 for c in cycles):
            raise ValueError
    except ValueError:
        print("bench_comm: --cycle-times: comma-separated non-negative milliseconds",
              file=sys.stderr)
        return 2
    try:
        nps = [int(n) for n in a.np.split(",") if n.strip()]
        if not nps or min(nps) < 1:
            raise ValueError
    except ValueError:
        print("bench_comm: --np: comma-separated positive rank counts", file=sys.stderr)
        return 2
    if a.rounds < 1 or a.repeats < 1 or a.warmup < 0 or a.compute_ms < 0:
        print("bench_comm: --rounds and --repeats must be >= 1, --warmup and --compute-ms >= 0",
              file=sys.stderr)
        return 2
    run(nps, cycles, a.rounds, a.warmup, a.compute_ms, a.out or None, a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
