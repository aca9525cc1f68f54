"""Config -> the parts of a run on this process. Nothing here trains; `core.loop.Trainer` runs them.

Order matters only where a part needs another: the backend first (it decides N, the rank and the
device), then the data (rank 0 fills the cache first), the model and its flat buffer (the same
initial weights everywhere: seeded, then broadcast), the algorithms (one per packed run), the run
views and the checkpoint, which restores every stateful part of the finished build.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from prsgd.data import dataset as data_mod

from prsgd.data import plan as data_mod_plan
from prsgd.algorithms import REGISTRY, LoopState, algorithm_class
from prsgd.backends import BACKENDS, backend_class, make_comm
from prsgd.records.checkpoint import Checkpointer
from prsgd.records.lifecycle import RunLifecycle
from prsgd.records.state import ListState, RngState
from prsgd.core.flat import FlatModel
from prsgd.core.memory import check_replicas_fit
from prsgd.core.config import Config, ConfigError
from prsgd.core.diagnostics import Diagnostics
from prsgd.data.features import FeatureData
from prsgd.core.feed import Feed
from prsgd.core.models import LogReg, ResNet20, tile_state
from prsgd.records.recorder import RunView
from prsgd.records.results import new_run_id
from prsgd.core.step import DTYPES, GraphCache, LocalSteps, StepRunner


def packed_run_id(run_id: str, interval: int) -> str:
    """The run id of interval I in a packed sweep: `RUN_ID-I{I}`, or RUN_ID with `{interval}`
    filled in where it holds that placeholder (the sweep driver's `I{interval}-s0`)."""
    if "{interval}" in run_id:
        return run_id.replace("{interval}", str(interval))
    return f"{run_id}-I{interval}"


def run_configs(cfg: Config) -> list[Config]:
    """One Config per packed run: exactly what a separate run of it would have been given."""
    if not cfg.intervals:
        return [cfg]
    return [dataclasses.replace(cfg, interval=i, intervals=(),
                                run_id=packed_run_id(cfg.run_id, i)) for i in cfg.intervals]


def resolve_device(cfg: Config, local_rank: int) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device: cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def cpu_threads(local_size: int) -> int:
    """Torch threads per process: the CPUs this process may run on (its affinity, which a
    container or `taskset` narrows), shared by the processes on this machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, local_size))


def set_torch_flags(cfg: Config, local_size: int) -> None:
    torch.set_num_threads(cpu_threads(local_size))
    torch.backends.cudnn.deterministic = bool(cfg.deterministic)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


@dataclass
class Parts:
    cfg: Config
    comm: object                 # the process's Comm (run 0's view)
    N: int
    device: torch.device
    dataset: object
    model: torch.nn.Module
    fm: FlatModel
    replicas: int
    steps: LocalSteps            # one local step of this process's active workers
    runner: StepRunner
    feed: Feed
    runs: list                   # RunView per packed run (one for an ordinary run)
    eval_model: torch.nn.Module
    eval_fm: FlatModel
    loop: LoopState
    steps_per_epoch: int
    total_steps: int
    slowdown: float
    checkpoint: Checkpointer
    lifecycle: RunLifecycle      # status.json and the guard around the loop


def _launch(cfg: Config, backend_comm=None):
    """The backend, and the config validated against its world."""
    cls = algorithm_class(cfg.algorithm) if cfg.algorithm in REGISTRY else None
    gpu = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    kw = dict(dynamic_groups=bool(cls and cls.dynamic_groups), device_type="cuda" if gpu else "cpu",
              comm=backend_comm)
    # A backend that holds every worker needs no launcher's world: validate before starting it.
    if cfg.backend not in BACKENDS or backend_class(cfg.backend).holds_all_workers:
        cfg.validate()
        return make_comm(cfg.backend, workers=cfg.workers, **kw)
    comm = make_comm(cfg.backend, workers=cfg.workers, **kw)
    cfg.validate(comm.size)
    return comm


def _load_data(cfg: Config, comm):
    """Rank 0 decodes and fills the cache first, the others then read the cache. A data error on
    rank 0 still releases the waiting ranks, so the launcher ends instead of hanging."""
    load = lambda: data_mod.load(cfg.dataset, cfg.data, cfg.train_subset, cfg.test_subset,
                                 cfg.seed)
    if comm.rank != 0:
        comm.barrier()
        return load()
    try:
        return load()
    finally:
        comm.barrier()


def _new_model(cfg: Config, dataset, replicas: int):
    if cfg.model == "logreg":
        return LogReg(replicas=replicas, dim=dataset.train_x.shape[1])
    return ResNet20(replicas=replicas)


def _model(cfg: Config, dataset, replicas: int, device, dtype):
    """A model of `replicas` copies of the seeded initial weights, on the device."""
    torch.manual_seed(cfg.seed)
    single = _new_model(cfg, dataset, 1)
    model = single if replicas == 1 else _new_model(cfg, dataset, replicas)
    if replicas > 1:
        model.load_state_dict(tile_state(single.state_dict(), replicas))
    model.to(device, dtype)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _check_cuda_graph(cfg: Config, device, algo_cls) -> None:
    if cfg.cuda_graph and device.type != "cuda":
        raise ConfigError(f"--cuda-graph: needs a CUDA device (got --device {cfg.device} -> "
                          f"{device})")
    if cfg.cuda_graph and (not algo_cls.capturable or cfg.diagnostics or cfg.slowdown):
        capturable = "|".join(a for a in REGISTRY if algorithm_class(a).capturable)
        raise ConfigError(f"--cuda-graph: captures the plain Algorithm 1 step only (not with "
                          f"--algorithm other than {capturable}, --diagnostics or --slowdown)")


def _run_views(configs, algo_cls, fm, comm, *, N, spe, total_steps, backend, diagnostics):
    """One RunView per run of the process (a packed sweep: one per interval): its algorithm,
    its view of the communicator, its directory and diagnostics."""
    runs = []
    for c, cfg_c in enumerate(configs):
        algorithm = algo_cls(cfg_c, workers=N, local_workers=comm.workers,
                             steps_per_epoch=spe, total_steps=total_steps, backend=backend)
        algorithm.start(fm)
        view = comm.view(c)
        diag = Diagnostics(fm, comm, num_workers=N, config=c) if diagnostics else None
        runs.append(RunView(c, cfg_c, Path(cfg_c.out) / cfg_c.run_id, algorithm,
                            diag if diag is not None else view, comm.rank == 0, diag))
    comm.register_groups(runs[0].algorithm.groups())
    return runs


def _local_steps(cfg: Config, dataset, model, fm, comm, first, *, N, spe, runs, replicas,
                 device, dtype):
    """The local step: images on the device, each worker's batches, the StepRunner. Eager
    steps call `runner.update`; with --cuda-graph the whole step (batch, forward, backward,
    SGD) is one graph of the same arithmetic, so the flag changes the speed, never the weights."""
    holder = data_mod_plan.DeviceData if cfg.model == "resnet20" else FeatureData
    images = holder(dataset.train_x, dataset.train_y, device)
    feed = Feed(images, num_samples=len(dataset.train_y), workers=comm.workers, num_workers=N,
                batch_size=cfg.batch_size, seed=cfg.seed, augment=cfg.augment,
                steps_per_epoch=spe, runs=runs, device=device)
    runner = StepRunner(model, fm, images, replicas=replicas, copies=runs,
                        precision=cfg.precision, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay, channels_last=cfg.channels_last,
                        cuda_graph=cfg.cuda_graph, device=device)
    if first.algorithm.on_gradients is not None:
        runner.grad_hook = lambda: first.algorithm.on_gradients(fm, first.comm)
    return runner, feed, LocalSteps(runner, feed, dtype, spe)


def build(cfg: Config, backend_comm=None) -> Parts:
    """Every part of the run `cfg` on this process, restored from its checkpoint on --resume.
    `backend_comm`: an existing communicator for the backend to run on (e.g. an mpi4py one for
    Horovod); None = the launcher's world."""
    comm = _launch(cfg, backend_comm)
    N = cfg.num_workers(comm.size)
    set_torch_flags(cfg, comm.local_size)
    device = resolve_device(cfg, comm.local_rank)
    algo_cls = algorithm_class(cfg.algorithm)
    _check_cuda_graph(cfg, device, algo_cls)
    comm.timed = not cfg.cuda_graph
    dataset = _load_data(cfg, comm)
    M = len(dataset.train_y)
    if data_mod_plan.shard_size(M, N) < cfg.batch_size:
        raise ConfigError(f"--batch-size: {cfg.batch_size} is larger than a worker's shard "
                          f"({data_mod_plan.shard_size(M, N)} = {M} images / {N} workers)")
    spe = data_mod_plan.steps_per_epoch(M, N, cfg.batch_size)
    total_steps = min(cfg.epochs * spe, cfg.max_steps or cfg.epochs * spe)
    algo_cls.validate_run(cfg, steps_per_epoch=spe, total_steps=total_steps)

    # Model: every worker starts from the same weights (seeded, then broadcast from rank 0).
    cfg.run_id = comm.broadcast_object(cfg.run_id or (new_run_id() if comm.rank == 0 else None))
    configs = run_configs(cfg)
    C, dtype = len(configs), DTYPES[cfg.precision]
    replicas = len(comm.workers) * C
    check_replicas_fit(lambda: _new_model(cfg, dataset, 1), dataset.train_x, replicas=replicas,
                       workers=N, runs=C, batch=cfg.batch_size, itemsize=dtype.itemsize,
                       device=device)
    model = _model(cfg, dataset, replicas, device, dtype)
    fm = FlatModel(model, replicas)
    comm.attach(fm, C)
    comm.broadcast_(fm.flat)
    if cfg.cuda_graph and hasattr(comm, "set_graphs"):
        comm.set_graphs(GraphCache(device))   # packed rounds replay as captured graphs
    eval_model = _model(cfg, dataset, C, device, dtype)
    eval_fm = FlatModel(eval_model, C)
    runs = _run_views(configs, algo_cls, fm, comm, N=N, spe=spe, total_steps=total_steps,
                      backend=cfg.backend, diagnostics=cfg.diagnostics)
    first = runs[0]
    runner, feed, steps = _local_steps(cfg, dataset, model, fm, comm, first, N=N, spe=spe,
                                       runs=C, replicas=replicas, device=device, dtype=dtype)

    loop = LoopState(worker_step_counts=[0] * len(comm.workers),
                     per_worker=bool(getattr(first.algorithm, "lockstep", False)))
    # The algorithm saves before the counters: its state_dict may finish an in-flight round
    # (--overlap-delay), which counts that round, and the counters saved must include it.
    stateful = {"flat": fm, "loop": loop, "algorithm": ListState([r.algorithm for r in runs]),
                "counters": first.counters,
                "config_counters": ListState([r.counters for r in runs]), "rng": RngState(device)}
    # Refuses a directory holding another run; --restart clears it; --resume restores state.
    # (Packed sweeps: one checkpoint of all runs, in the first run's directory.)
    checkpoint = Checkpointer(cfg=cfg, comm=comm, runs=runs, parts=stateful, loop=loop,
                              workers=N, dataset=dataset)
    resumed = checkpoint.prepare()
    derived = {"workers": N, "steps_per_epoch": spe, "total_steps": total_steps,
               "global_batch": N * cfg.batch_size,
               "averaged_floats": fm.region(cfg.average_momentum).numel() // replicas,
               "param_floats": fm.num_params // replicas,   # the clock costs compressed rounds
               **first.algorithm.derived()}
    packed = ({"intervals": list(cfg.intervals), "replicas": replicas,
               "sweep_run_id": cfg.run_id} if C > 1 else None)
    for run in runs:
        run.write_config(sweep_cfg=cfg, derived=derived, world_size=comm.size, device=device,
                         dataset=dataset, resumed_from=resumed["epoch"] if resumed else None,
                         packed=packed, comm=comm.provenance(),
                         resume_changes=checkpoint.resume_changes)
        run.open_writers()
    return Parts(cfg=cfg, comm=comm, N=N, device=device, dataset=dataset, model=model, fm=fm,
                 replicas=replicas, steps=steps, runner=runner, feed=feed, runs=runs,
                 eval_model=eval_model, eval_fm=eval_fm, loop=loop, steps_per_epoch=spe,
                 total_steps=total_steps,
                 slowdown=cfg.slowdown[comm.rank] if cfg.slowdown else 1.0,
                 checkpoint=checkpoint,
                 lifecycle=RunLifecycle(comm=comm, run_dirs=checkpoint.run_dirs, loop=loop,
                                        num_epochs=first.algorithm.num_epochs,
                                        checkpoint=checkpoint))
