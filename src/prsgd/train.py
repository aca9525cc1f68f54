"""Train ResNet20 on CIFAR-10 with local SGD and periodic model averaging (PR-SGD).

    horovodrun -np 8 python -m prsgd.train --preset paper --interval 8 --dataset imagefolder \
        --data ../shared/data/cifar10-jpeg
    python -m prsgd.train --preset smoke --backend packed --workers 2   # one process, N replicas

One loop serves both backends. Each worker steps SGD on its own shard; after every local step the
schedule says which averaging rounds happen now and the communicator averages the flat buffer.
Metrics are reduced across workers once per epoch. Rank 0 alone writes files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import config as config_mod
from . import checkpoint as checkpoint_mod
from . import data as data_mod
from .comm import FlatModel, HorovodComm, PackedComm
from . import ownership
from .config import Config, ConfigError, RunFinished
from .models import LogReg, ResNet20, tile_state
from .diagnostics import Diagnostics, DIAG_COLUMNS, corollary1
from .features import FeatureData
from .results import (MetricsWriter, RecordError, new_run_id, os_error_message, portable_path,
                      provenance, read_json, write_json_atomic)
from .schedule import GLOBAL, Heterogeneous, lr_at, make_schedule, Varying
from .step import DTYPES, GraphCache, StepRunner


class Diverged(RuntimeError):
    pass


def packed_run_id(run_id: str, interval: int) -> str:
    """The run id of interval I in a packed sweep: `RUN_ID-I{I}`, or RUN_ID with `{interval}`
    filled in where it holds that placeholder (the sweep driver's `I{interval}-s0`)."""
    if "{interval}" in run_id:
        return run_id.replace("{interval}", str(interval))
    return f"{run_id}-I{interval}"


# HOROVOD_CYCLE_TIME for ranks that train on a GPU (`make bench-comm`, results/bench/comm-*.json):
# a round's allreduce waits for the background thread's next cycle. With a rank that leaves the
# CPU cores free, 0.1 ms instead of Horovod's 1 ms cut that wait by ~45% at no compute cost;
# with ranks that keep every core busy (CPU training) the faster-polling thread slowed compute
# (2 ranks on 2 cores: rounds 15% slower), so CPU runs keep Horovod's default.
GPU_CYCLE_TIME_MS = "0.1"


def cycle_time_default(device_type: str) -> str | None:
    """The HOROVOD_CYCLE_TIME this process sets unless the user set one: None keeps Horovod's."""
    return GPU_CYCLE_TIME_MS if device_type == "cuda" else None


def init_horovod(dynamic_process_sets: bool = False, device_type: str = "cpu"):
    """The one place Horovod is initialised. `dynamic_process_sets`: allow `hvd.add_process_set`
    after init (Hier-AVG's groups; it sets HOROVOD_DYNAMIC_PROCESS_SETS=1 for this process).
    `device_type`: where this rank trains, for the cycle-time default (a user's env var wins)."""
    import horovod.torch as hvd
    cycle = cycle_time_default(device_type)
    if cycle is not None:
        os.environ.setdefault("HOROVOD_CYCLE_TIME", cycle)
    hvd.init(process_sets="dynamic" if dynamic_process_sets else None)
    return hvd


def resolve_device(cfg: Config, local_rank: int) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device: cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _local_size() -> int:
    return int(os.environ.get("HOROVOD_LOCAL_SIZE", os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", 1)))


def _local_rank() -> int:
    return int(os.environ.get("HOROVOD_LOCAL_RANK", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)))


@torch.no_grad()
def evaluate_packed(model, images: torch.Tensor, labels: torch.Tensor, device, copies: int,
                    batch: int = 1000, channels_last: bool = False):
    """Per-replica (loss sums, numbers correct) of a `replicas=copies` model in eval mode; every
    replica sees the same inputs (copies == 1: an ordinary model)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    loss = torch.zeros(copies, device=device, dtype=torch.float64)
    correct = torch.zeros(copies, device=device, dtype=torch.int64)
    for i in range(0, len(labels), batch):
        x = images[i:i + batch].to(device)
        image = x.dim() == 4
        x = (data_mod.normalize(x) if image else x).to(dtype)
        y = labels[i:i + batch].to(device)
        if copies > 1:
            x = x.repeat(1, copies, 1, 1) if image else x.repeat(1, copies)
        if channels_last and image:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x).to(dtype)                                        # (b, copies, classes)
        loss += F.cross_entropy(out.transpose(1, 2), y[:, None].expand(-1, copies),
                                reduction="none").double().sum(0)
        correct += (out.argmax(-1) == y[:, None]).sum(0)
    return loss, correct, len(labels)


class Trainer:
    """State of one run on this process. `hooks.after_step(trainer, step, events)` is called after
    each local step and its averaging rounds (tests use it to look at the weights)."""

    def __init__(self, cfg: Config, hooks=None):
        self.hooks = hooks
        gpu = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        self.hvd = init_horovod(cfg.algorithm == "hier", "cuda" if gpu else "cpu") \
            if cfg.backend == "horovod" else None
        world = self.hvd.size() if self.hvd else None
        cfg.validate(world)
        self.cfg = cfg
        self.N = cfg.num_workers(world)
        self.rank = self.hvd.rank() if self.hvd else 0
        self.is_writer = self.rank == 0
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // _local_size()))
        if cfg.deterministic:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        self.device = resolve_device(cfg, _local_rank())
        if cfg.cuda_graph and self.device.type != "cuda":
            raise ConfigError("--cuda-graph: needs a CUDA device (got --device "
                              f"{cfg.device} -> {self.device})")
        if cfg.cuda_graph and (cfg.algorithm not in ("prsgd", "kavg") or cfg.diagnostics
                               or cfg.slowdown):
            raise ConfigError("--cuda-graph: captures the plain Algorithm 1 step only (not with "
                              "--algorithm other than prsgd|kavg, --diagnostics or --slowdown)")
        # Packed sweeps: C runs (one per interval) of N workers each in one process.
        self.intervals = tuple(cfg.intervals) or (cfg.interval,)
        self.C = len(self.intervals)

        # Data: rank 0 decodes and fills the cache first, the others then read the cache.
        load = lambda: data_mod.load(cfg.dataset, cfg.data, cfg.train_subset, cfg.test_subset,
                                     cfg.seed)
        if self.hvd and self.rank != 0:
            self._barrier()
            self.dataset = load()
        else:
            self.dataset = self._load_or_fail(load)
            if self.hvd:
                self._barrier()
        M = len(self.dataset.train_y)
        if data_mod.shard_size(M, self.N) < cfg.batch_size:
            raise ConfigError(f"--batch-size: {cfg.batch_size} is larger than a worker's shard "
                              f"({data_mod.shard_size(M, self.N)} = {M} images / {self.N} workers)")
        self.steps_per_epoch = data_mod.steps_per_epoch(M, self.N, cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.schedules = [make_schedule(
            cfg.algorithm, workers=self.N, interval=interval, group_size=cfg.group_size,
            global_every=cfg.global_every, epoch_lengths=cfg.epoch_lengths,
            epoch_growth=cfg.epoch_growth, worker_intervals=cfg.worker_intervals,
            round_budget_s=cfg.round_budget_s, local_epochs=cfg.local_epochs,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps) for interval in self.intervals]
        self.schedule = self.schedules[0]
        # Algorithm 3: workers make different numbers of steps, so the run and its reported
        # epochs are counted in rounds, which every worker shares (see _period_done).
        self.hetero = isinstance(self.schedule, Heterogeneous)
        # Packed Algorithm 3: every worker in this process, advancing in lockstep iterations in
        # which only the workers with steps left in the round step (schedule.lockstep).
        self.lockstep = self.hetero and cfg.backend == "packed"
        if self.hetero:
            self.total_rounds = self.schedule.total_rounds(self.total_steps)
            self.rounds_per_epoch = max(1, self.steps_per_epoch // self.schedule.reference)
        self.slowdown = cfg.slowdown[self.rank] if cfg.slowdown else 1.0

        # Model: every worker starts from the same weights (seeded, then broadcast from rank 0).
        torch.manual_seed(cfg.seed)
        single = self._new_model(1)
        self.replicas = 1 if self.hvd else self.N * self.C
        self.model = single if self.hvd else self._new_model(self.replicas)
        if not self.hvd:
            self.model.load_state_dict(tile_state(single.state_dict(), self.replicas))
        self.dtype = DTYPES[cfg.precision]
        self.model.to(self.device, self.dtype)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.fm = FlatModel(self.model, self.replicas)
        if self.hvd:
            self.comm = HorovodComm(self.hvd, timed=not cfg.cuda_graph)
            self.comm.broadcast_(self.fm.flat)
            self.comm.register_groups(getattr(self.schedule, "subgroups", ()))
        else:
            self.comm = PackedComm(self.fm, self.N, timed=not cfg.cuda_graph, configs=self.C)
        self.workers = self.comm.workers
        self.eval_model = self._new_model(self.C).to(self.device, self.dtype)
        if cfg.channels_last:
            self.eval_model.to(memory_format=torch.channels_last)
        self.eval_fm = FlatModel(self.eval_model, self.C)
        holder = data_mod.DeviceData if cfg.model == "resnet20" else FeatureData
        self.images = holder(self.dataset.train_x, self.dataset.train_y, self.device)
        # The local step. Eager steps call `runner.update`; with --cuda-graph the whole step
        # (batch, forward, backward, SGD) is one graph of the same arithmetic, so the flag
        # changes the speed, never the weights.
        self.runner = StepRunner(self.model, self.fm, self.images, replicas=self.replicas,
                                 copies=self.C, precision=cfg.precision, momentum=cfg.momentum,
                                 weight_decay=cfg.weight_decay, channels_last=cfg.channels_last,
                                 cuda_graph=cfg.cuda_graph, device=self.device)
        self.avg_graphs = GraphCache(self.device) if cfg.cuda_graph and not self.hvd else None
        # One Diagnostics per packed run (each measures its own N replicas); usually one.
        self.diags = [Diagnostics(self.fm, self.comm, self.hvd is not None, self.N, config=c)
                      for c in range(self.C)] if cfg.diagnostics else []
        self.optimizer = self._gradient_allreduce_optimizer() \
            if cfg.algorithm == "gradient_allreduce" else None

        self.step = 0
        self.epoch = 0
        self.train_seconds = 0.0
        self.rounds_done = 0        # global rounds this worker took part in
        self.step_in_round = 0      # local steps since this worker's last global round
        self.worker_steps = 0       # local steps of all workers together (reduced per epoch)
        self._round_steps: list = []   # Algorithm 3: this epoch's steps per round (per worker)
        self.worker_step_counts = [0] * self.N   # lockstep: each worker's own local steps
        self._plans: dict[int, data_mod.EpochPlan] = {}   # lockstep: plans by data epoch
        self._plan, self._plan_epoch = None, -1
        self.run_dirs = self._make_run_dirs()
        self.run_dir = self.run_dirs[0]
        self.writers = [MetricsWriter(d / "metrics.csv") for d in self.run_dirs] \
            if self.is_writer else []
        self.writer = self.writers[0] if self.writers else None
        self.diag_writers = [MetricsWriter(d / "diagnostics.csv", DIAG_COLUMNS)
                             for d in self.run_dirs] if self.is_writer and self.diags else []

    def _new_model(self, replicas: int):
        if self.cfg.model == "logreg":
            return LogReg(replicas=replicas, dim=self.dataset.train_x.shape[1])
        return ResNet20(replicas=replicas)

    # --- setup helpers -------------------------------------------------------------------------
    def _barrier(self):
        if self.hvd:
            self.hvd.barrier()

    def _load_or_fail(self, load):
        try:
            return load()
        except data_mod.DataError:
            if self.hvd:  # release the waiting ranks so the launcher ends instead of hanging
                self.hvd.barrier()
            raise

    def _gradient_allreduce_optimizer(self):
        """The classical baseline: Horovod's DistributedOptimizer averages gradients each step."""
        cfg, hvd = self.cfg, self.hvd
        opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        return hvd.DistributedOptimizer(opt, named_parameters=self.model.named_parameters())

    def run_configs(self) -> list[Config]:
        """One Config per packed run: exactly what a separate run of it would have been given."""
        cfg = self.cfg
        if not cfg.intervals:
            return [cfg]
        return [dataclasses.replace(cfg, interval=interval, intervals=(),
                                    run_id=packed_run_id(cfg.run_id, interval))
                for interval in self.intervals]

    def _make_run_dirs(self) -> list[Path]:
        cfg = self.cfg
        run_id = cfg.run_id or (new_run_id() if self.is_writer else None)
        run_id = self.comm.broadcast_object(run_id)
        cfg.run_id = run_id
        dirs = [Path(c.out) / c.run_id for c in self.run_configs()]
        # Refuses a directory holding another run; --restart clears it; --resume restores state.
        # (Packed sweeps: one checkpoint of all runs, in the first run's directory.)
        self.checkpoint = checkpoint_mod.Checkpointer(self, dirs)
        resumed = self.checkpoint.prepare()
        for c, (cfg_c, run_dir) in enumerate(zip(self.run_configs(), dirs)):
            if self.is_writer:
                self._write_config(c, cfg_c, run_dir, resumed)
        return dirs

    def _write_config(self, c: int, cfg_c: Config, run_dir: Path, resumed) -> None:
        cfg = self.cfg
        run_dir.mkdir(parents=True, exist_ok=True)
        devices = [torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                   else f"cpu ({os.cpu_count()} cores)"]
        derived = {"workers": self.N, "steps_per_epoch": self.steps_per_epoch,
                   "total_steps": self.total_steps,
                   "global_batch": self.N * cfg.batch_size,
                   "averaged_floats": self.fm.region(cfg.average_momentum).numel()
                   // self.replicas}
        if self.C > 1:  # train_seconds is then the wall clock of all packed runs together
            derived["packed"] = {"intervals": list(self.intervals), "index": c,
                                 "replicas": self.replicas, "sweep_run_id": cfg.run_id}
        meta = {
            # Paths as the record may keep them (no path of this machine in results/).
            "config": dict(cfg_c.to_dict(), data=portable_path(cfg_c.data),
                           out=portable_path(cfg_c.out)),
            "derived": derived,
            "provenance": provenance(world_size=self.hvd.size() if self.hvd else 1,
                                     devices=devices, dataset=self.dataset),
            "theory": corollary1(self.total_steps, self.N, cfg_c.interval),
        }
        if resumed is not None and (run_dir / "config.json").exists():
            # Keep the original provenance; log every resumption (i14: with the operational
            # fields it changed, e.g. progress; any other change was refused).
            old = read_json(run_dir / "config.json")
            old.setdefault("resumes", []).append(
                {"from_epoch": resumed["epoch"], "provenance": meta["provenance"],
                 "changed": self.checkpoint.resume_changes})
            meta = old
        write_json_atomic(run_dir / "config.json", meta)

    # --- the loop ------------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        cfg = self.cfg
        varying = self.schedule if isinstance(self.schedule, Varying) else None
        if self.hetero:  # the lr follows the shared rounds, not the worker's own step count
            step = self.schedule.reference_step(self.rounds_done, self.step_in_round)
        return lr_at(step, base_lr=cfg.lr, steps_per_epoch=self.steps_per_epoch,
                     milestones=cfg.lr_milestones, gamma=cfg.lr_gamma, varying=varying,
                     epoch_lrs=cfg.epoch_lrs, shift=cfg.lr_decay_shift)

    def local_step(self, x, y, lr: float):
        """One eager local step of every replica; returns (each replica's loss, correct)."""
        if self.optimizer is None:
            self.runner.set_lr(lr)
            return self.runner.update(x, y)
        fm = self.fm
        per, correct = self.runner.update(x, y, step=False)
        t0 = time.perf_counter()
        self.optimizer.synchronize()
        self.comm.counters.add("global", fm.grad.numel() * fm.grad.element_size(),
                               time.perf_counter() - t0)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with self.optimizer.skip_synchronize():
            self.optimizer.step()
        return per, correct

    def _batch(self, step: int):
        """This process's batch for local step `step` (1-based): column (step-1) % spe of the
        plan of data epoch (step-1) // spe. Workers that make more steps (Algorithm 3) just move
        through their shards of later data epochs sooner."""
        cfg = self.cfg
        data_epoch, col = divmod(step - 1, self.steps_per_epoch)
        if data_epoch != self._plan_epoch:
            self._plan = data_mod.epoch_plan(len(self.dataset.train_y), self.workers, self.N,
                                             cfg.batch_size, cfg.seed, data_epoch,
                                             cfg.augment).to(self.device)
            self._plan_epoch = data_epoch
        p = self._plan
        self.batch_index = p.index[:, col]  # which samples each worker used (for tests)
        x, y = self.images.batch(p.index[:, col], p.oy[:, col], p.ox[:, col], p.flip[:, col])
        if self.C > 1:  # every packed run sees the same batches (same seed)
            x = x.repeat(1, self.C, 1, 1) if x.dim() == 4 else x.repeat(1, self.C)
            y = y.repeat(1, self.C)
        return x, y

    def _lockstep_batch(self):
        """Packed Algorithm 3: each worker's batch for its own local step (workers move through
        their shards at their own pace; an idle worker gets its last batch, discarded)."""
        cfg, spe = self.cfg, self.steps_per_epoch
        where = [divmod(max(k, 1) - 1, spe) for k in self.worker_step_counts]
        for e in {e for e, _ in where} - set(self._plans):
            self._plans[e] = data_mod.epoch_plan(len(self.dataset.train_y), self.workers, self.N,
                                                 cfg.batch_size, cfg.seed, e,
                                                 cfg.augment).to(self.device)
        oldest = min(e for e, _ in where)
        self._plans = {e: p for e, p in self._plans.items() if e >= oldest}
        parts = [torch.stack([getattr(self._plans[e], f)[w, col] for w, (e, col)
                              in enumerate(where)]) for f in ("index", "oy", "ox", "flip")]
        self.batch_index = parts[0]
        return self.images.batch(*parts)

    def _masked_step(self, x, y, lr: float, active: list[bool]):
        """A local step of the active replicas only: idle replicas' parameters, BN statistics
        and momentum are put back afterwards (their forward/backward is wasted, not wrong)."""
        idle = [w for w, a in enumerate(active) if not a]
        if not idle:
            return self.local_step(x, y, lr)
        rows = torch.tensor(idle, device=self.device)
        views = [self.fm.flat[o:o + k].view(self.replicas, -1)
                 for o, k in self.fm.region_segments(True)]
        saved = [v[rows] for v in views]          # advanced indexing: copies
        out = self.local_step(x, y, lr)
        with torch.no_grad():
            for v, kept in zip(views, saved):
                v[rows] = kept
        return out

    @property
    def num_epochs(self) -> int:
        """Reported epochs of the run: of local steps, or for Algorithm 3 of shared rounds."""
        if self.hetero:
            return math.ceil(self.total_rounds / self.rounds_per_epoch)
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def _period_done(self, end: int) -> bool:
        """A reported epoch ends after `end` local steps, or for Algorithm 3 after `end` rounds:
        every worker then reaches the epoch's collectives (metrics, evaluation) together."""
        return self.rounds_done >= end if self.hetero else self.step >= end

    def _simulate_slowness(self, t0: float, comm0: float):
        """A worker `slowdown` times slower: sleep (factor - 1) x this step's compute time."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        compute = time.perf_counter() - t0 - (self.comm.counters.total("seconds") - comm0)
        time.sleep((self.slowdown - 1.0) * max(compute, 0.0))

    def run_epoch(self):
        cfg = self.cfg
        end = (min(self.rounds_done + self.rounds_per_epoch, self.total_rounds) if self.hetero
               else min((self.epoch + 1) * self.steps_per_epoch, self.total_steps))
        n = self.replicas
        loss_sum = torch.zeros(n, device=self.device, dtype=torch.float64)
        correct = torch.zeros(n, device=self.device, dtype=torch.int64)
        # First step with a non-finite loss, per replica (0 = none): kept on the device, so
        # finding where a run diverged costs no host synchronisation per step.
        first_bad = torch.zeros(n, device=self.device, dtype=torch.int64)
        steps = torch.zeros(n, dtype=torch.float64)   # local steps of each replica this epoch
        region = self.fm.region(cfg.average_momentum)
        counters = self.comm.counters
        diag_s0 = sum(d.seconds for d in self.diags)
        t0 = round_start = time.perf_counter()
        lr = self.lr(self.step + 1)
        while not self._period_done(end):
            self.step += 1
            self.step_in_round += 1
            lr = self.lr(self.step)
            t_step, comm0 = time.perf_counter(), counters.total("seconds")
            if self.cfg.cuda_graph:   # captured step; it sums loss/accuracy itself
                if self.step == self.epoch * self.steps_per_epoch + 1:
                    self._batch(self.step)
                    self.runner.begin_epoch(self._plan)
                self.runner.set_lr(lr)
                self.runner.step(self.step - 1 - self.epoch * self.steps_per_epoch)
            elif self.lockstep:
                active, lock_events = self.schedule.lockstep(self.step_in_round)
                self.worker_step_counts = [k + a for k, a in
                                           zip(self.worker_step_counts, active)]
                self.step = self.worker_step_counts[0]   # what rank 0 counts under Horovod
                x, y = self._lockstep_batch()
                loss, corr = self._masked_step(x.to(self.dtype), y, lr, active)
                act = torch.tensor(active, device=self.device)
                own = torch.tensor(self.worker_step_counts, device=self.device)
                loss_sum += torch.where(act, loss, 0)
                first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss) & act, own,
                                        first_bad)
                correct += torch.where(act, corr, 0)
                steps += torch.tensor(active, dtype=torch.float64)
            else:
                x, y = self._batch(self.step)
                loss, corr = self.local_step(x.to(self.dtype), y, lr)
                loss_sum += loss
                first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), self.step,
                                        first_bad)
                correct += corr
            for diag in self.diags:
                diag.after_step(lr)
            if self.slowdown > 1.0:
                self._simulate_slowness(t_step, comm0)
            if not self.lockstep:
                steps += 1
            now = time.perf_counter()   # this round's length if one more such step were made
            round_s = (now - round_start) + (now - t_step)
            events = []
            for c, schedule in enumerate(self.schedules):   # one schedule per packed run
                run_events = lock_events if self.lockstep else \
                    schedule.events(self.step, self.workers[0], round_s)
                if self.optimizer is None:  # gradient_allreduce averaged the gradients already
                    for ev in run_events:
                        if self.diags:   # the same round, plus the consensus distance
                            self.diags[c].average_(region, ev)
                        elif self.hvd:
                            self.comm.average_(region, ev)
                        else:
                            self.comm.average_(region, ev, config=c, graphs=self.avg_graphs)
                events += run_events if c == 0 else []
            if any(ev.level == GLOBAL for ev in events):
                if self.hetero:   # lockstep: every worker made its I_i steps
                    self._round_steps.append(list(self.schedule.intervals) if self.lockstep
                                             else self.step_in_round)
                self.rounds_done += 1
                self.step_in_round = 0
                round_start = time.perf_counter()
            if self.hooks is not None:
                self.hooks.after_step(self, self.step, events)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - t0 - (sum(d.seconds for d in self.diags)
                                                          - diag_s0)
        if self.cfg.cuda_graph:
            loss_sum, correct = self.runner.loss_sum, self.runner.correct
        # One metric reduction per epoch, per packed run c: [loss sum, correct, batches, samples,
        # first non-finite step of each worker]. Workers may have made different numbers of steps
        # (Algorithm 3), so each sends its own counts.
        C, per = self.C, n // self.C
        batches = steps.view(C, per).sum(1)
        counts = torch.stack([batches, batches * cfg.batch_size], 1)
        bad = torch.zeros(C, self.N, dtype=torch.float64)   # worker w's first bad step at [c, w]
        bad[:, self.workers] = first_bad.cpu().double().view(C, per)
        sums = torch.stack([loss_sum.view(C, per).sum(1), correct.view(C, per).sum(1).double()], 1)
        tot = self.comm.sum_metrics(torch.cat([sums.cpu(), counts, bad], 1))
        self.first_bad_steps = [int(v) for v in tot[:, 4:].reshape(-1)]
        self.worker_steps += int(tot[0, 2])
        if self.hetero:
            self._log_rounds()
        return [(float(t[0] / t[2]), float(t[1] / t[3])) for t in tot], lr

    def _log_rounds(self):
        """Algorithm 3: rank 0 appends the steps every worker made in each round of this epoch to
        rounds.jsonl. One gather per epoch; every worker had the same number of rounds."""
        mine = torch.tensor(self._round_steps, dtype=torch.int64)
        table = mine.T.tolist() if self.lockstep else self.comm.gather_rows(mine).tolist()
        # table: (workers, rounds)
        first = self.rounds_done - len(self._round_steps)
        if self.is_writer:
            with open(self.run_dir / "rounds.jsonl", "a") as f:
                for r in range(len(self._round_steps)):
                    f.write(json.dumps({"round": first + r + 1, "epoch": self.epoch + 1,
                                        "steps": [row[r] for row in table]}) + "\n")
        self._round_steps = []

    def averaged_eval(self):
        """Loss/accuracy of each run's averaged model, on a copy; local models are untouched."""
        cfg = self.cfg
        avg = self.comm.average_copy(self.fm.state) if self.hvd else self.comm.config_means(self.C)
        self.eval_fm.state.copy_(avg)
        ds = self.dataset
        shard = slice(self.rank, None, self.hvd.size()) if self.hvd else slice(None)
        sets = [(ds.test_x[shard], ds.test_y[shard])]
        if cfg.eval_train_loss:
            sets.append((ds.train_x[shard], ds.train_y[shard]))
        parts = [evaluate_packed(self.eval_model, x, y, self.device, self.C,
                                 channels_last=cfg.channels_last) for x, y in sets]
        # (C, sets, 3): per run and set, [loss sum, correct, count]
        local = torch.stack([torch.stack([l.cpu(), c.cpu().double(),
                                          torch.full((self.C,), float(k), dtype=torch.float64)], 1)
                             for l, c, k in parts], 1)
        tot = self.comm.sum_metrics(local)
        outs = []
        for t in tot:
            out = {"test_loss": float(t[0, 0] / t[0, 2]), "test_acc": float(t[0, 1] / t[0, 2])}
            if cfg.eval_train_loss:
                out["full_train_loss"] = float(t[1, 0] / t[1, 2])
            outs.append(out)
        return outs

    def train(self):
        cfg = self.cfg
        epochs = self.num_epochs
        run_ids = [c.run_id for c in self.run_configs()]
        while self.epoch < epochs:
            results, lr = self.run_epoch()
            self.epoch += 1
            loss = next((l for l, _ in results if not math.isfinite(l)), results[0][0])
            if not math.isfinite(loss):
                first = min((s, w) for w, s in enumerate(self.first_bad_steps) if s) \
                    if any(self.first_bad_steps) else (self.step, None)
                where = ""
                if self.C > 1:   # packed sweep: say which runs diverged (the others stop too)
                    bad = [run_ids[k] for k, (l, _) in enumerate(results) if not math.isfinite(l)]
                    where = f" of run(s) {', '.join(bad)}"
                    if first[1] is not None:
                        first = (first[0], f"{first[1] % self.N} of {run_ids[first[1] // self.N]}")
                raise Diverged(f"training loss is {loss} in epoch {self.epoch}{where}: first "
                               f"non-finite loss at step {first[0]} (worker {first[1]}); the run "
                               f"stopped at step {self.step}")
            evals = None
            if cfg.eval_every and (self.epoch % cfg.eval_every == 0 or self.epoch == epochs):
                evals = self.averaged_eval()
            for c, diag in enumerate(self.diags):
                drow = diag.epoch_row(self.epoch, self.step, self.intervals[c])
                if self.diag_writers:
                    self.diag_writers[c].write(drow)
            rows = []
            for k, (loss, acc) in enumerate(results):
                c = self.comm.config_counters[k] if not self.hvd else self.comm.counters
                row = {"epoch": self.epoch, "step": self.step, "train_seconds": self.train_seconds,
                       "train_loss": loss, "train_acc": acc, "lr": lr,
                       "rounds": c.rounds["global"], "rounds_local": c.rounds["local"],
                       "bytes": c.total("bytes"), "comm_seconds": c.total("seconds"),
                       "bytes_local": c.bytes["local"], "comm_seconds_local": c.seconds["local"],
                       "worker_steps": self.worker_steps,
                       "compute_seconds": self.train_seconds - c.total("seconds")}
                if evals is not None:
                    row.update(evals[k])
                rows.append(row)
                if self.writers:
                    self.writers[k].write(row)
                    if cfg.progress:
                        test = f" test_acc {row['test_acc']:.4f}" if "test_acc" in row else ""
                        print(f"[{run_ids[k]}] epoch {self.epoch}/{epochs} step {self.step} "
                              f"loss {loss:.4f} acc {acc:.4f}{test} lr {lr:g} "
                              f"rounds {c.total('rounds')} {self.train_seconds:.1f}s",
                              flush=True)
            self.checkpoint.end_of_epoch(rows, last=self.epoch == epochs)
        for w in self.writers:
            w.close()
        for w in self.diag_writers:
            w.close()
        return self.run_dir


def _say_resumed(trainer: Trainer) -> None:
    if trainer.checkpoint.resumed_from is not None and trainer.is_writer and trainer.cfg.progress:
        print(f"[{trainer.cfg.run_id}] resumed from the checkpoint of epoch "
              f"{trainer.checkpoint.resumed_from} (step {trainer.step})", flush=True)


def run(cfg: Config, hooks=None) -> Path | None:
    """Train; returns the run directory on the writing rank, None on the others."""
    trainer = Trainer(cfg, hooks)
    _say_resumed(trainer)
    with trainer.checkpoint.guard(Diverged):  # status.json: done/diverged/interrupted/failed
        run_dir = trainer.train()
    return run_dir if trainer.is_writer else None


def train_packed_sweep(cfg: Config, intervals=None, hooks=None) -> list[Path]:
    """Train one packed run per interval in ONE process (replicas = len(intervals) * workers);
    returns their run directories `OUT/RUN_ID-I{interval}`, each with its own config.json and
    metrics.csv, written exactly as a separate run of that interval would write them.

    `cfg`: the common config (`backend` is forced to packed; `workers` N must be set); `intervals`
    defaults to `cfg.intervals`; `cfg.run_id` may hold `{interval}` (see `packed_run_id`). With
    `cfg.resume` it continues from the checkpoint in the first run's directory. Same seed =>
    every packed run sees the batches the separate run (or the Horovod ranks) would see, from
    the same initial weights.
    """
    intervals = tuple(intervals if intervals is not None else cfg.intervals)
    if not intervals:
        raise ConfigError("--intervals: give at least one interval, e.g. --intervals 1,4,8,16,32")
    cfg = dataclasses.replace(cfg, backend="packed", intervals=intervals,
                              interval=intervals[0])
    trainer = Trainer(cfg, hooks)
    _say_resumed(trainer)
    with trainer.checkpoint.guard(Diverged):
        trainer.train()
    return trainer.run_dirs


def main(argv=None) -> int:
    try:
        cfg = config_mod.from_args(argv)
        if cfg.intervals:
            cfg.validate()  # --intervals without --backend packed is an error, not a sweep
            for run_dir in train_packed_sweep(cfg):
                print(f"run directory: {run_dir}")
            return 0
        run_dir = run(cfg)
    except (ConfigError, data_mod.DataError, RecordError) as e:
        print(f"prsgd.train: error: {e}", file=sys.stderr)
        return 2
    except RunFinished as e:   # i14: --resume of a finished run trains nothing
        print(f"prsgd.train: {e}", file=sys.stderr)
        return e.exit_code
    except Diverged as e:
        print(f"prsgd.train: diverged: {e}", file=sys.stderr)
        return 3
    except checkpoint_mod.Interrupted as e:
        print(f"prsgd.train: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:   # i14: an I/O failure: one line naming the path (status.json: failed)
        print(f"prsgd.train: error: {os_error_message(e)}", file=sys.stderr)
        return 1
    finally:
        ownership.release_all()   # i14: in-process callers (tests) may start another run
    if run_dir is not None:
        print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
