"""Throughput of one local SGD step, side by side on this machine (`make bench`).

Variants (ResNet20, local batch 32, synthetic images, momentum SGD with weight decay):
- `plain`: the eager pattern of Horovod's own PyTorch examples: a DataLoader over a
  TensorDataset, a Python loop, `.to(device)` per batch, torch.optim.SGD. One process and no
  Horovod in any variant here: what a round's allreduce adds is `bench_comm`'s subject (with one
  rank it still waits for Horovod's next cycle).
- `eager`: our path for one rank (device-resident data, augmentation as one gather, flat SGD).
- `graph` (CUDA only): the same step captured in one CUDA graph; fp32/TF32 and bf16+channels_last.
- `packed8` / `packed40`: 8 replicas (one N = 8 run), 40 replicas (five N = 8 runs, the Figure 3
  sweep) in one module; `+avg` variants also do the averaging rounds of I = 1,4,8,16,32.

images/s counts every replica's images. Results go to results/bench/bench-<host>-<time>.json.
On a CPU the sizes are tiny: the tests exercise the code and never look at the timings.
"""
from __future__ import annotations

import argparse
import json
import platform
import socket
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))   # run from a checkout

from prsgd.data import plan as data_plan
from prsgd.data import sources as data_sources
from prsgd.backends.packed import PackedComm
from prsgd.core.flat import FlatModel
from prsgd.core.models import ResNet20, tile_state
from prsgd.records.results import git_info
from prsgd.core.schedule import Periodic
from prsgd.core.step import GraphCache, StepRunner

SWEEP_INTERVALS = (1, 4, 8, 16, 32)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_plain(device, steps: int, warmup: int, batch: int = 32, images: int = 4096) -> dict:
    """Horovod's examples (pytorch_mnist.py / pytorch_imagenet_resnet50.py) without torchvision."""
    ds = data_sources.synthetic(images, 16, 0)
    x = data_plan.normalize(ds.train_x)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, ds.train_y),
                                         batch_size=batch, shuffle=True, drop_last=True)
    model = ResNet20(1).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    done, t0 = 0, None
    while done < warmup + steps:
        for data, target in loader:
            if done == warmup:
                _sync(device)
                t0 = time.perf_counter()
            data, target = data.to(device), target.to(device)
            opt.zero_grad()
            out = model(data)[:, 0]
            loss = F.cross_entropy(out, target)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return _result("plain", time.perf_counter() - t0, steps, batch)


def bench_ours(name: str, device, workers: int, copies: int, steps: int, warmup: int, *,
               cuda_graph: bool, precision: str = "fp32", channels_last: bool = False,
               intervals=(), batch: int = 32) -> dict:
    """Our step (StepRunner) for `copies` runs of `workers` replicas; averaging when `intervals`."""
    R = workers * copies
    least = 4096 if device.type == "cuda" else 64
    ds = data_sources.synthetic(max(least, workers * batch * 4), 16, 0)
    dd = data_plan.DeviceData(ds.train_x, ds.train_y, device)
    torch.manual_seed(0)
    model = ResNet20(replicas=R)
    model.load_state_dict(tile_state(ResNet20(1).state_dict(), R))
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    fm = FlatModel(model, R)
    runner = StepRunner(model, fm, dd, replicas=R, copies=copies, precision=precision,
                        momentum=0.9, weight_decay=1e-4, channels_last=channels_last,
                        cuda_graph=cuda_graph, device=device)
    comm = PackedComm(fm, workers, timed=False, runs=copies,
                      graphs=GraphCache(device) if cuda_graph else None)
    scheds = [Periodic(i, workers) for i in intervals]
    region = fm.region(False)
    per_epoch = data_plan.steps_per_epoch(len(ds.train_y), workers, batch)
    runner.set_lr(0.1)
    done, epoch, t0 = 0, 0, None
    while done < warmup + steps:
        plan = data_plan.epoch_plan(len(ds.train_y), list(range(workers)), workers, batch, 0,
                                   epoch).to(device)
        runner.begin_epoch(plan)
        for s in range(per_epoch):
            if done == warmup:
                _sync(device)
                t0 = time.perf_counter()
            runner.step(s)
            done += 1
            for c, sch in enumerate(scheds):
                for ev in sch.events(done):
                    comm.view(c).average_(region, ev)
            if done == warmup + steps:
                break
        epoch += 1
    _sync(device)
    r = _result(name, time.perf_counter() - t0, steps, batch * R)
    r.update(replicas=R, precision=precision, channels_last=channels_last,
             cuda_graph=cuda_graph, averaging_intervals=list(intervals))
    return r


def _result(name, seconds, steps, images_per_step) -> dict:
    return {"variant": name, "steps": steps, "seconds": seconds,
            "ms_per_step": 1000 * seconds / steps,
            "images_per_s": images_per_step * steps / seconds}


def variants(device, steps: int, warmup: int, batch: int = 32):
    gpu = device.type == "cuda"
    yield lambda: bench_plain(device, steps, warmup, batch, 4096 if gpu else 64)
    yield lambda: bench_ours("eager", device, 1, 1, steps, warmup, cuda_graph=False, batch=batch)
    if gpu:
        yield lambda: bench_ours("graph", device, 1, 1, steps, warmup, cuda_graph=True)
        yield lambda: bench_ours("graph-bf16-cl", device, 1, 1, steps, warmup, cuda_graph=True,
                                 precision="bf16", channels_last=True)
    yield lambda: bench_ours("packed8-eager", device, 8, 1, steps, warmup, cuda_graph=False,
                             batch=batch)
    for c in (1, 5):
        name = f"packed{8 * c}"
        if gpu:
            yield lambda c=c, name=name: bench_ours(name, device, 8, c, steps, warmup,
                                                    cuda_graph=True)
            yield lambda c=c, name=name: bench_ours(name + "-bf16-cl", device, 8, c, steps,
                                                    warmup, cuda_graph=True, precision="bf16",
                                                    channels_last=True)
    if gpu:
        yield lambda: bench_ours("packed40-bf16-cl+avg", device, 8, 5, steps, warmup,
                                 cuda_graph=True, precision="bf16", channels_last=True,
                                 intervals=SWEEP_INTERVALS)
        yield lambda: bench_ours("packed40+avg", device, 8, 5, steps, warmup, cuda_graph=True,
                                 intervals=SWEEP_INTERVALS)
    else:
        yield lambda: bench_ours("packed40-eager+avg", device, 8, 5, steps, warmup,
                                 cuda_graph=False, intervals=SWEEP_INTERVALS, batch=batch)


def run_bench(device: str = "auto", steps: int = 0, warmup: int = 0,
              out: str = "results/bench", batch: int = 32) -> dict:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    gpu = dev.type == "cuda"
    steps = steps or (200 if gpu else 2)
    warmup = warmup or (20 if gpu else 1)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    rows = []
    for make in variants(dev, steps, warmup, batch):
        r = make()
        rows.append(r)
        print(f"{r['variant']:>24}: {r['ms_per_step']:8.2f} ms/step {r['images_per_s']:10.0f} "
              f"images/s", flush=True)
    plain = rows[0]["images_per_s"]
    for r in rows:
        r["ratio_to_plain"] = r["images_per_s"] / plain
    report = {"rows": rows, "device": torch.cuda.get_device_name(dev) if gpu else
              f"cpu ({platform.processor() or platform.machine()})",
              "torch": torch.__version__, "python": platform.python_version(),
              "git": git_info(), "host": socket.gethostname(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": steps, "warmup": warmup,
              "batch": batch}
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / f"bench-{'gpu' if gpu else 'cpu'}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        report["path"] = str(path)
    print(f"{'variant':>24} {'ms/step':>9} {'images/s':>10} {'x plain':>8}")
    for r in rows:
        print(f"{r['variant']:>24} {r['ms_per_step']:9.2f} {r['images_per_s']:10.0f} "
              f"{r['ratio_to_plain']:8.2f}")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/bench.py", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--steps", type=int, default=0, help="timed steps (0: 200 GPU, 2 CPU)")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps (0: 20 GPU, 1 CPU)")
    p.add_argument("--out", default="results/bench", help="folder for the JSON ('' = none)")
    p.add_argument("--batch", type=int, default=32, help="local batch per replica")
    a = p.parse_args(argv)
    if a.steps < 0 or a.warmup < 0 or a.batch <= 0:
        print("bench: --steps/--warmup must be >= 0 and --batch > 0", file=sys.stderr)
        return 2
    if a.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    run_bench(a.device, a.steps, a.warmup, a.out, a.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
