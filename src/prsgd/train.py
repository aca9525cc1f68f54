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
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import config as config_mod
from . import data as data_mod
from .comm import FlatModel, HorovodComm, PackedComm
from .config import Config, ConfigError
from .models import ResNet20, tile_state
from .results import MetricsWriter, new_run_id, provenance, write_json_atomic
from .schedule import lr_at, make_schedule, Varying
from .step import DTYPES, GraphCache, StepRunner


class Diverged(RuntimeError):
    pass


def init_horovod():
    """The one place Horovod is initialised."""
    import horovod.torch as hvd
    hvd.init()
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
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, device, batch: int = 1000):
    """Sum of losses, number correct, count, for a replicas=1 model in eval mode."""
    model.eval()
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for i in range(0, len(labels), batch):
        x = data_mod.normalize(images[i:i + batch].to(device)).to(next(model.parameters()).dtype)
        y = labels[i:i + batch].to(device)
        out = model(x)[:, 0]
        loss += F.cross_entropy(out.float(), y, reduction="sum").double()
        correct += (out.argmax(-1) == y).sum()
    return loss, correct, len(labels)


@torch.no_grad()
def evaluate_packed(model, images: torch.Tensor, labels: torch.Tensor, device, copies: int,
                    batch: int = 1000, channels_last: bool = False):
    """Per-replica (loss sums, numbers correct) of a `replicas=copies` model in eval mode; every
    replica sees the same images. With copies == 1 this is `evaluate` in the model's dtype."""
    model.eval()
    dtype = next(model.parameters()).dtype
    loss = torch.zeros(copies, device=device, dtype=torch.float64)
    correct = torch.zeros(copies, device=device, dtype=torch.int64)
    for i in range(0, len(labels), batch):
        x = data_mod.normalize(images[i:i + batch].to(device)).to(dtype)
        y = labels[i:i + batch].to(device)
        if copies > 1:
            x = x.repeat(1, copies, 1, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x).to(dtype)                                        # (b, copies, 10)
        loss += F.cross_entropy(out.transpose(1, 2), y[:, None].expand(-1, copies),
                                reduction="none").double().sum(0)
        correct += (out.argmax(-1) == y[:, None]).sum(0)
    return loss, correct, len(labels)


class Trainer:
    """State of one run on this process. `hooks.after_step(trainer, step, events)` is called after
    each local step and its averaging rounds (tests use it to look at the weights)."""

    def __init__(self, cfg: Config, hooks=None):
        self.hooks = hooks
        self.hvd = init_horovod() if cfg.backend == "horovod" else None
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
            worker_intervals=cfg.worker_intervals, local_epochs=cfg.local_epochs,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps) for interval in self.intervals]
        self.schedule = self.schedules[0]

        # Model: every worker starts from the same weights (seeded, then broadcast from rank 0).
        torch.manual_seed(cfg.seed)
        single = ResNet20(replicas=1)
        self.replicas = 1 if self.hvd else self.N * self.C
        self.model = single if self.hvd else ResNet20(replicas=self.replicas)
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
            self.comm.register_groups({g for t in range(1, self.total_steps + 1)
                                       for e in self.schedule.events(t, self.rank)
                                       for g in e.groups} if cfg.algorithm == "hier" else ())
        else:
            self.comm = PackedComm(self.fm, self.N, timed=not cfg.cuda_graph, configs=self.C)
        self.workers = self.comm.workers
        self.eval_model = ResNet20(replicas=self.C).to(self.device, self.dtype)
        if cfg.channels_last:
            self.eval_model.to(memory_format=torch.channels_last)
        self.eval_fm = FlatModel(self.eval_model, self.C)
        self.images = data_mod.DeviceData(self.dataset.train_x, self.dataset.train_y, self.device)
        self.runner = StepRunner(self.model, self.fm, self.images, replicas=self.replicas,
                                 copies=self.C, precision=cfg.precision, momentum=cfg.momentum,
                                 weight_decay=cfg.weight_decay, channels_last=cfg.channels_last,
                                 cuda_graph=cfg.cuda_graph, device=self.device)
        self.avg_graphs = GraphCache(self.device) if cfg.cuda_graph and not self.hvd else None
        self.optimizer = self._gradient_allreduce_optimizer() \
            if cfg.algorithm == "gradient_allreduce" else None

        self.step = 0
        self.epoch = 0
        self.train_seconds = 0.0
        self.run_dirs = self._make_run_dirs()
        self.run_dir = self.run_dirs[0]
        self.writers = [MetricsWriter(d / "metrics.csv") for d in self.run_dirs] \
            if self.is_writer else []
        self.writer = self.writers[0] if self.writers else None

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
        base = cfg.run_id
        return [dataclasses.replace(cfg, interval=interval, intervals=(),
                                    run_id=f"{base}-I{interval}")
                for interval in self.intervals]

    def _make_run_dirs(self) -> list[Path]:
        cfg = self.cfg
        run_id = cfg.run_id or (new_run_id() if self.is_writer else None)
        run_id = self.comm.broadcast_object(run_id)
        cfg.run_id = run_id
        dirs = []
        for c, cfg_c in enumerate(self.run_configs()):
            run_dir = Path(cfg_c.out) / cfg_c.run_id
            dirs.append(run_dir)
            if not self.is_writer:
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            if cfg.resume:
                raise ConfigError("--resume: not supported yet (see the reliability issue)")
            if (run_dir / "metrics.csv").exists() and (run_dir / "metrics.csv").stat().st_size:
                raise ConfigError(f"--out/--run-id: {run_dir} already holds a run; choose another "
                                  "--run-id or remove it")
            devices = [torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                       else f"cpu ({os.cpu_count()} cores)"]
            derived = {"workers": self.N, "steps_per_epoch": self.steps_per_epoch,
                       "total_steps": self.total_steps,
                       "global_batch": self.N * cfg.batch_size,
                       "averaged_floats": self.fm.region(cfg.average_momentum).numel()
                       // self.replicas}
            if self.C > 1:  # train_seconds is then the wall clock of all packed runs together
                derived["packed"] = {"intervals": list(self.intervals), "index": c,
                                     "replicas": self.replicas, "sweep_run_id": run_id}
            meta = {
                "config": cfg_c.to_dict(),
                "derived": derived,
                "provenance": provenance(world_size=self.hvd.size() if self.hvd else 1,
                                         devices=devices, dataset=self.dataset),
            }
            write_json_atomic(run_dir / "config.json", meta)
        return dirs

    # --- the loop ------------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        cfg = self.cfg
        varying = self.schedule if isinstance(self.schedule, Varying) else None
        return lr_at(step, base_lr=cfg.lr, steps_per_epoch=self.steps_per_epoch,
                     milestones=cfg.lr_milestones, gamma=cfg.lr_gamma, varying=varying,
                     epoch_lrs=cfg.epoch_lrs)

    def local_step(self, x, y, lr: float):
        cfg, fm, n = self.cfg, self.fm, self.replicas
        self.model.train()
        fm.zero_grad()
        with torch.autocast(self.device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
            out = self.model(x)                                        # (B, n, 10)
        logits = out if out.dtype == torch.float64 else out.float()   # bf16 logits -> fp32 loss
        per = F.cross_entropy(logits.reshape(-1, out.shape[-1]), y.reshape(-1),
                              reduction="none").view(-1, n).mean(0)    # (n,) each replica's loss
        per.sum().backward()
        if self.optimizer is not None:
            t0 = time.perf_counter()
            self.optimizer.synchronize()
            self.comm.counters.add("global", fm.grad.numel() * fm.grad.element_size(),
                                   time.perf_counter() - t0)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            with self.optimizer.skip_synchronize():
                self.optimizer.step()
        else:
            fm.sgd_step(lr, cfg.momentum, cfg.weight_decay)
        return per.detach(), (out.detach().argmax(-1) == y).sum(0)

    def run_epoch(self):
        """One global epoch of every packed run; returns ([(loss, acc) per run], lr)."""
        cfg = self.cfg
        plan = data_mod.epoch_plan(len(self.dataset.train_y), self.workers, self.N,
                                   cfg.batch_size, cfg.seed, self.epoch, cfg.augment)
        plan = plan.to(self.device)
        n, C = self.replicas, self.C
        runner = self.runner
        steps = 0
        region = self.fm.region(cfg.average_momentum)
        t0 = time.perf_counter()
        if self.optimizer is None:
            runner.begin_epoch(plan)
        else:
            loss_sum = torch.zeros(n, device=self.device, dtype=torch.float64)
            correct = torch.zeros(n, device=self.device, dtype=torch.int64)
        for s in range(self.steps_per_epoch):
            if self.step >= self.total_steps:
                break
            self.step += 1
            lr = self.lr(self.step)
            self.batch_index = plan.index[:, s]  # which samples each worker used (for tests)
            steps += 1
            if self.optimizer is not None:
                x, y = self.images.batch(plan.index[:, s], plan.oy[:, s], plan.ox[:, s],
                                         plan.flip[:, s])
                loss, corr = self.local_step(x.to(runner.dtype), y, lr)
                loss_sum += loss
                correct += corr
                events = []
            else:
                runner.set_lr(lr)
                runner.step(s)
                events = []
                for c, schedule in enumerate(self.schedules):
                    for ev in schedule.events(self.step, self.workers[0]):
                        if self.hvd:
                            self.comm.average_(region, ev)
                        else:
                            self.comm.average_(region, ev, config=c, graphs=self.avg_graphs)
                        events.append(ev)
            if self.hooks is not None:
                self.hooks.after_step(self, self.step, events)
        if self.optimizer is None:
            loss_sum, correct = runner.loss_sum, runner.correct
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - t0
        # One metric reduction per epoch: per run [loss sum, correct, batches, samples].
        # loss_sum holds per-batch mean losses, so it is divided by batches, correct by samples.
        per = n // C
        counts = torch.tensor([[steps * per, steps * per * cfg.batch_size]] * C,
                              dtype=torch.float64)
        local = torch.cat([torch.stack([loss_sum.view(C, per).sum(1),
                                        correct.view(C, per).sum(1).double()], 1).cpu(), counts], 1)
        tot = self.comm.sum_metrics(local)
        return [(float(t[0] / t[2]), float(t[1] / t[3])) for t in tot], lr

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
        epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        run_ids = [c.run_id for c in self.run_configs()]
        while self.epoch < epochs:
            results, lr = self.run_epoch()
            self.epoch += 1
            for loss, _ in results:
                if not math.isfinite(loss):
                    raise Diverged(f"training loss is {loss} in epoch {self.epoch} "
                                   f"(by step {self.step})")
            evals = None
            if cfg.eval_every and (self.epoch % cfg.eval_every == 0 or self.epoch == epochs):
                evals = self.averaged_eval()
            for c, (loss, acc) in enumerate(results):
                cnt = self.comm.config_counters[c] if not self.hvd else self.comm.counters
                row = {"epoch": self.epoch, "step": self.step, "train_seconds": self.train_seconds,
                       "train_loss": loss, "train_acc": acc, "lr": lr,
                       "rounds": cnt.rounds["global"], "rounds_local": cnt.rounds["local"],
                       "bytes": cnt.total("bytes"), "comm_seconds": cnt.total("seconds"),
                       "compute_seconds": self.train_seconds - cnt.total("seconds")}
                if evals is not None:
                    row.update(evals[c])
                if self.writers:
                    self.writers[c].write(row)
                    if cfg.progress:
                        test = f" test_acc {row['test_acc']:.4f}" if "test_acc" in row else ""
                        print(f"[{run_ids[c]}] epoch {self.epoch}/{epochs} step {self.step} "
                              f"loss {loss:.4f} acc {acc:.4f}{test} lr {lr:g} "
                              f"rounds {cnt.total('rounds')} {self.train_seconds:.1f}s",
                              flush=True)
        for w in self.writers:
            w.close()
        return self.run_dir


def run(cfg: Config, hooks=None) -> Path | None:
    """Train; returns the run directory on the writing rank, None on the others."""
    trainer = Trainer(cfg, hooks)
    run_dir = trainer.train()
    return run_dir if trainer.is_writer else None


def train_packed_sweep(cfg: Config, intervals=None, hooks=None) -> list[Path]:
    """Train one packed run per interval in ONE process (replicas = len(intervals) * workers);
    returns their run directories `OUT/RUN_ID-I{interval}`, each with its own config.json and
    metrics.csv, written exactly as a separate run of that interval would write them.

    `cfg`: the common config (`backend` is forced to packed; `workers` N must be set); `intervals`
    defaults to `cfg.intervals`. Same seed => every packed run sees the batches the separate run
    (or the Horovod ranks) would see, from the same initial weights.
    """
    intervals = tuple(intervals if intervals is not None else cfg.intervals)
    if not intervals:
        raise ConfigError("--intervals: give at least one interval, e.g. --intervals 1,4,8,16,32")
    cfg = dataclasses.replace(cfg, backend="packed", intervals=intervals,
                              interval=intervals[0])
    trainer = Trainer(cfg, hooks)
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
    except (ConfigError, data_mod.DataError) as e:
        print(f"prsgd.train: error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"prsgd.train: diverged: {e}", file=sys.stderr)
        return 3
    if run_dir is not None:
        print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
