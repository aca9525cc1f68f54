"""Measuring what the clock needs, on the machines at hand (`python -m prsgd.clock calibrate-*`).

calibrate-compute: one worker's local step with the trainer's own step code (`StepRunner`:
    gather + augment, forward, backward, flat SGD), eager and, on CUDA, captured in a graph.
    Under horovodrun every rank times its steps at the same moment, so the contention between
    ranks that share a machine is the one training sees; the file keeps every rank's mean.
    `--codecs fp16,int8,topk:0.01`: also each compressor's encode and decode (clock/codecs.py).
calibrate-network: real Horovod allreduces of several sizes between real ranks, at each level:
    all ranks (across nodes when there are several) and each node's ranks together (as
    Hier-AVG's local rounds run); a least-squares fit of the ring model gives alpha and the bus
    bandwidth per level (clock/fit.py). Before every allreduce all ranks sleep the same random
    time, so the allreduce meets Horovod's cycle at a random phase, as a training round does;
    that wait (half a cycle on average) is the model's `overhead`, subtracted before the fit.

    horovodrun -np 4 -H nodeA:2,nodeB:2 --gloo --network-interface lab0 \\
        python -m prsgd.clock calibrate-network --out net.json --note "50 Mbit/s tbf"
    horovodrun -np 4 -H nodeA:2,nodeB:2 --gloo --network-interface lab0 \\
        python -m prsgd.clock calibrate-compute --like RUN_DIR --out compute.json
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from prsgd.clock import codecs
from prsgd.clock.collectives import ALLGATHER, ALLREDUCE
from prsgd.clock.fit import level_fits
from prsgd.records import rundir

KIND = "prsgd-clock-calibration"
RESNET20_BUFFER = 271_098 * 4          # bytes of one ResNet20 averaging round (params + BN stats)
DEFAULT_SIZES = (4096, 65536, 262144, RESNET20_BUFFER, 2 * RESNET20_BUFFER)


# --- shared pieces ------------------------------------------------------------------------------
def _provenance() -> dict:
    import platform
    import socket
    import torch
    from prsgd.records.results import git_info, portable_command, HOROVOD_KNOBS
    try:
        import horovod
        hvd_version = horovod.__version__
    except ImportError:
        hvd_version = None
    return {"git": git_info(), "versions": {"python": platform.python_version(),
                                            "torch": torch.__version__, "horovod": hvd_version},
            "host": socket.gethostname(), "cpu_count": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "horovod_env": {k: os.environ[k] for k in HOROVOD_KNOBS if k in os.environ},
            "command": portable_command(sys.argv), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _launched_comm(dynamic_groups: bool = False):
    """The communicator (backends' `Comm`) of the launcher that started this process:
    horovodrun or mpirun -> horovod, torchrun -> torchdist; None for a process on its own."""
    if "HOROVOD_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        name = "horovod"
    elif all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")):
        name = "torchdist"
    else:
        return None
    from prsgd.backends import make_comm
    return make_comm(name, dynamic_groups=dynamic_groups)


def _write(path: str, doc: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_text_atomic(out, json.dumps(doc, indent=2, allow_nan=False) + "\n")  # no bare NaN
    print(out)


# --- compute ------------------------------------------------------------------------------------
def calibration_images(steps: int, batch: int, replicas: int = 1) -> int:
    """Synthetic images enough for every timed step to stay in the first epoch. Measured on one
    CPU core, ResNet20, 45 steps of batch 32: 0.080-0.085 s per step when they loop 5-6 times over
    256 images, 0.071-0.074 s over 2,048, which is what the trainer's own steps take (why the
    small looped set is slower was not established)."""
    return min(max(steps * batch * replicas, 256), 50_000)


def time_steps(*, device, batch: int, precision: str, channels_last: bool, cuda_graph: bool,
               steps: int, warmup: int, replicas: int = 1, comm=None) -> float:
    """Mean seconds of one StepRunner step of `replicas` packed workers (the trainer's code)."""
    import torch
    from prsgd.data import plan as data_mod_plan
    from prsgd.data import sources as data_mod_sources
    from prsgd.core.flat import FlatModel
    from prsgd.core.models import ResNet20, tile_state
    from prsgd.core.step import DTYPES, StepRunner
    ds = data_mod_sources.synthetic(calibration_images(steps + warmup, batch, replicas), 16, 0)
    images = data_mod_plan.DeviceData(ds.train_x, ds.train_y, device)
    torch.manual_seed(0)
    model = ResNet20(replicas=replicas)
    model.load_state_dict(tile_state(ResNet20(1).state_dict(), replicas))
    model.to(device, DTYPES[precision])
    if channels_last:
        model.to(memory_format=torch.channels_last)
    fm = FlatModel(model, replicas)
    runner = StepRunner(model, fm, images, replicas=replicas, precision=precision, momentum=0.9,
                        weight_decay=1e-4, channels_last=channels_last, cuda_graph=cuda_graph,
                        device=device)
    runner.set_lr(0.1)
    per_epoch = data_mod_plan.steps_per_epoch(len(ds.train_y), replicas, batch)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    done, epoch, t0 = 0, 0, None
    while done < warmup + steps:
        plan = data_mod_plan.epoch_plan(len(ds.train_y), list(range(replicas)), replicas, batch, 0,
                                   epoch).to(device)
        runner.begin_epoch(plan)
        for s in range(per_epoch):
            if done == warmup:
                sync()
                if comm is not None:      # every rank starts timing together
                    comm.barrier()
                t0 = time.perf_counter()
            runner.step(s)
            done += 1
            if done == warmup + steps:
                break
        epoch += 1
    sync()
    return (time.perf_counter() - t0) / steps


def _like(run_dir: str) -> dict:
    meta = rundir.read_config(run_dir)
    c = meta["config"]
    return {"batch": c.get("batch_size", 32), "precision": c.get("precision", "fp32"),
            "channels_last": bool(c.get("channels_last")), "cuda_graph": bool(c.get("cuda_graph"))}


def cmd_compute(args) -> int:
    import torch
    try:
        codec_list = codecs.parse_specs(args.codecs)
    except ValueError as e:
        print(f"prsgd.clock calibrate-compute: error: {e}", file=sys.stderr)
        return 2
    comm = _launched_comm()
    local_size = comm.local_size if comm else 1
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or max(1, (affinity or 1) // local_size)
    torch.set_num_threads(threads)
    opts = {"batch": args.batch_size, "precision": args.precision,
            "channels_last": args.channels_last, "cuda_graph": args.cuda_graph}
    if args.like:
        opts.update(_like(args.like))
    want = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = comm.local_rank if comm else 0
    device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1)) \
        if want == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    variants = {"eager": dict(opts, cuda_graph=False)}
    if device.type == "cuda":
        variants["graph"] = dict(opts, cuda_graph=True)
    measured = {}
    for name, v in variants.items():
        s = time_steps(device=device, batch=v["batch"], precision=v["precision"],
                       channels_last=v["channels_last"], cuda_graph=v["cuda_graph"],
                       steps=args.steps, warmup=args.warmup, comm=comm)
        per_rank = comm.allgather_object(s) if comm else [s]
        measured[name] = {"seconds_per_step": max(per_rank), "per_rank_seconds_per_step": per_rank,
                          "options": v}
    codec_part = codecs.measure(codec_list, _param_count(args.like), comm, args.codec_repeats,
                                args.warmup) if codec_list else None
    if comm and comm.rank != 0:
        return _done(comm)
    chosen = "graph" if opts["cuda_graph"] and "graph" in measured else "eager"
    doc = {"kind": KIND, "name": args.name or f"compute {chosen} ({device})",
           "compute": {**measured[chosen], "variant": chosen, "variants": measured,
                       "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                       else f"cpu ({affinity} cores usable, {threads} threads per rank)",
                       "ranks": comm.size if comm else 1, "steps": args.steps,
                       "warmup": args.warmup, "statistic": "mean over timed steps; "
                       "seconds_per_step = the slowest rank",
                       "source": "measured: prsgd.clock calibrate-compute (StepRunner, the "
                                 "trainer's step code), synthetic CIFAR-shaped images",
                       "provenance": _provenance()}}
    if codec_part:
        doc["compute"]["codecs"] = codec_part
    _write(args.out, doc)
    return _done(comm)


def _param_count(run_dir: str) -> int:
    """The parameters a compressed round encodes: the run's (`--like`), else ResNet20's."""
    if run_dir:
        floats = rundir.read_config(run_dir).get("derived", {}).get("param_floats")
        if floats:
            return int(floats)
    from prsgd.core.models import ResNet20
    return sum(p.numel() for p in ResNet20(1).parameters())


def _done(comm, rc: int = 0) -> int:
    """Release the backend before the process ends (torch.distributed's group left to the
    interpreter's exit can abort a rank: see train.run)."""
    if comm is not None:
        comm.shutdown()
    return rc


# --- network ------------------------------------------------------------------------------------
def _levels(comm) -> tuple[dict, list]:
    """{level name: the groups of its collective}, and each rank's host. Inside the nodes is a
    level of its own when there are several nodes of several ranks each (its groups registered
    with the backend: collective, same order everywhere)."""
    import socket
    hosts = comm.allgather_object(socket.gethostname())
    by_host: dict[str, list[int]] = {}
    for r, h in enumerate(hosts):
        by_host.setdefault(h, []).append(r)
    groups = sorted(by_host.values())
    levels = {}
    if comm.size > 1:
        levels["inter" if len(groups) > 1 else "intra"] = [list(range(comm.size))]
    if len(groups) > 1 and all(len(g) > 1 for g in groups):
        comm.register_groups([tuple(g) for g in groups])
        levels["intra"] = groups
    return levels, hosts


def cmd_network(args) -> int:
    import torch
    from prsgd.core.schedule import GLOBAL, LOCAL, Event
    comm = _launched_comm(dynamic_groups=True)
    if comm is None:
        print("prsgd.clock calibrate-network: run it under horovodrun, mpirun or torchrun with "
              ">= 2 ranks", file=sys.stderr)
        return 2
    # Horovod batches collectives every HOROVOD_CYCLE_TIME ms (0.28's default: 1): on average
    # half a cycle of waiting per collective; torch.distributed starts each one at once.
    cycle_ms = float(os.environ.get("HOROVOD_CYCLE_TIME", "1")) if comm.name == "horovod" \
        else 0.0
    overhead = cycle_ms / 2000
    sizes = [int(s) for s in args.sizes.split(",")]
    levels, hosts = _levels(comm)
    rng = random.Random(12345)      # the same sleeps on every rank
    raw = []
    for level, groups in levels.items():
        # the backend counts rounds by the schedule's levels: all ranks or groups of them
        kind = GLOBAL if len(groups) == 1 else LOCAL
        event = Event(kind, tuple(tuple(g) for g in groups))
        for nbytes in sizes:
            buf = torch.randn(max(1, nbytes // 4))
            times = []
            for k in range(args.warmup + args.repeats):
                time.sleep(rng.uniform(0, 2 * cycle_ms / 1000))
                t0 = time.perf_counter()
                comm.average_(buf, event)
                if k >= args.warmup:
                    times.append(time.perf_counter() - t0)
            raw.append({"level": level, "collective": ALLREDUCE, "n": len(groups[0]),
                        "bytes": buf.numel() * 4, "rank": comm.rank, "seconds": times})
            if args.allgather and kind == GLOBAL:    # compressed rounds' collective: all ranks
                row = torch.randn(1, max(1, nbytes // 4))
                times = []
                for k in range(args.warmup + args.repeats):
                    time.sleep(rng.uniform(0, 2 * cycle_ms / 1000))
                    t0 = time.perf_counter()
                    comm.gather_rows(row)
                    if k >= args.warmup:
                        times.append(time.perf_counter() - t0)
                raw.append({"level": level, "collective": ALLGATHER, "n": len(groups[0]),
                            "bytes": row.numel() * 4, "rank": comm.rank, "seconds": times})
    everything = comm.allgather_object(raw)
    if comm.rank != 0:
        return _done(comm)
    doc = network_doc(everything, levels=levels, hosts=hosts, cycle_ms=cycle_ms,
                      overhead=overhead, note=args.note, backend=comm.name)
    doc["name"] = args.name or f"network {len(set(hosts))} nodes x {hosts.count(hosts[0])} ranks"
    _write(args.out, doc)
    failed = [f["error"] for v in doc["network"]["levels"].values()
              for f in (v, *(v.get("collectives") or {}).values()) if "error" in f]
    if failed:
        print("prsgd.clock calibrate-network: error: no fit for " + "; ".join(failed) +
              f" (the points are in {args.out})", file=sys.stderr)
        return _done(comm, 1)
    return _done(comm)


def network_doc(per_rank_raw, *, levels, hosts, cycle_ms, overhead, note="",
                backend: str = "horovod") -> dict:
    """Rank 0's summary of every rank's timings: per (level, size) and repeat the slowest rank
    (a collective ends when its last rank is done), the mean over repeats, and one fit per level."""
    import statistics
    cells: dict[tuple, list] = {}
    for raw in per_rank_raw:
        for r in raw:
            key = (r["level"], r.get("collective", ALLREDUCE), r["n"], r["bytes"])
            cells.setdefault(key, []).append(r["seconds"])
    points, fits = [], {}
    for (level, collective, n, nbytes), per_rank in sorted(cells.items()):
        slowest = [max(ts) for ts in zip(*per_rank)]
        points.append({"level": level, "collective": collective, "n": n, "bytes": nbytes,
                       "mean_s": statistics.fmean(slowest), "median_s": statistics.median(slowest),
                       "repeats": len(slowest)})
    for level in levels:
        fits[level] = level_fits(points, level, overhead)
    return {"kind": KIND, "network": {
        "ranks_per_node": hosts.count(hosts[0]), "nodes": len(set(hosts)), "hosts": hosts,
        "groups": levels, "levels": fits, "points": points, "cycle_time_ms": cycle_ms,
        "overhead_s": overhead,
        "overhead_rule": "cycle_time/2: mean wait for Horovod's next cycle (random phase)",
        "statistic": "per repeat the slowest rank; mean over repeats", "note": note,
        "source": f"measured: prsgd.clock calibrate-network ({backend} Comm.average_ and, "
                  "for allgather, Comm.gather_rows between the ranks)",
        "backend": backend,
        "provenance": _provenance()}}


def cmd_refit(args) -> int:
    """Fit a network file's levels again from the points it stores (e.g. with --flat-ok)."""
    doc = json.loads(Path(args.network).read_text())
    net = doc["network"]
    for level in net["levels"]:
        net["levels"][level] = level_fits(net["points"], level, net["overhead_s"], args.flat_ok)
        if "error" in net["levels"][level]:
            raise ValueError(net["levels"][level]["error"])
    net["refit"] = {"command": _provenance()["command"], "flat_ok": args.flat_ok}
    _write(args.out, doc)
    return 0


def add_parsers(sub) -> None:
    c = sub.add_parser("calibrate-compute", help="time one worker's local step (StepRunner)")
    c.add_argument("--out", required=True)
    c.add_argument("--name", default="")
    c.add_argument("--like", default="", help="a run directory: take its batch size, precision, "
                   "channels_last and cuda_graph")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp64"))
    c.add_argument("--channels-last", action="store_true")
    c.add_argument("--cuda-graph", action="store_true")
    c.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    c.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: usable cores // ranks on this node)")
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--warmup", type=int, default=3)
    c.add_argument("--codecs", default="", help="also time these compressors' encode and decode "
                   "(clock/codecs.py), e.g. fp16,bf16,int8,topk:0.01")
    c.add_argument("--codec-repeats", type=int, default=10)
    c.set_defaults(fn=cmd_compute)
    n = sub.add_parser("calibrate-network", help="fit alpha and bandwidth from real allreduces "
                       "(run under horovodrun)")
    n.add_argument("--out", required=True)
    n.add_argument("--name", default="")
    n.add_argument("--note", default="", help="what the link is (e.g. the tc settings)")
    n.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="bytes, comma-separated")
    n.add_argument("--repeats", type=int, default=10)
    n.add_argument("--warmup", type=int, default=2)
    n.add_argument("--allgather", action="store_true", help="also time allgathers of the same "
                   "sizes per worker across all ranks and fit their own ring model (compressed "
                   "rounds' collective)")
    n.set_defaults(fn=cmd_network)
    r = sub.add_parser("refit", help="fit a calibrate-network file's levels again from its points")
    r.add_argument("network")
    r.add_argument("--flat-ok", action="store_true", help="a level whose time does not grow "
                   "with the size gets alpha only, bandwidth unresolved")
    r.add_argument("--out", required=True)
    r.set_defaults(fn=cmd_refit)
