"""`python -m prsgd.doctor` (`make doctor`): is this box set up to train, and how?

Prints torch's and CUDA's versions, the GPUs torch sees, what Horovod was built with (Gloo, MPI,
NCCL operations, the install script's build key), which path a CUDA tensor's allreduce takes
(NCCL, or a copy through host memory and Gloo/MPI), then runs a real 2-rank allreduce on the
devices there are (horovodrun -np 2 --gloo; also mpirun when Horovod has MPI): CPU tensors against
the exact average, and on GPUs CUDA tensors against the CPU result (which catches a staging copy
read before it arrives). Exit status 1 when a check fails.

What a run's config.json records about Horovod (provenance.horovod_build) is
`backends.horovod.horovod_record`; this command reports the same facts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from prsgd.backends.horovod import allreduce_path, build_flags, controller_of
from prsgd.install import hvd_build

from prsgd.launch import commands as launch


# --- the 2-rank check (one process per rank) -----------------------------------------------------
def worker() -> int:
    """One rank: allreduce fp64 and fp32 tensors of several sizes; print one JSON line."""
    import torch
    import horovod.torch as hvd
    hvd.init()
    r, n = hvd.rank(), hvd.size()
    out = {"rank": r, "size": n, "controller": controller_of(hvd), "checks": []}
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # NCCL takes one GPU per rank: with fewer GPUs than ranks the CUDA check is the 1-rank one.
    cuda = gpus > 0 and (gpus >= n or not hvd.nccl_built())
    if gpus and not cuda:
        out["cuda_skipped"] = f"{gpus} GPU(s) for {n} NCCL ranks"

    def data(numel, dtype, k):   # rank-dependent, exactly representable sums
        return (torch.arange(numel, dtype=torch.float64) * (r + 1) + k).to(dtype)

    for dtype in (torch.float64, torch.float32):
        for numel in (1, 1000, 1 << 20):
            want = sum((torch.arange(numel, dtype=torch.float64) * (q + 1) + 3) for q in range(n)) / n
            cpu = hvd.allreduce(data(numel, dtype, 3), op=hvd.Average, name=f"c{dtype}{numel}")
            err = (cpu.double() - want).abs().max().item()
            out["checks"].append({"device": "cpu", "dtype": str(dtype), "numel": numel, "err": err})
            if cuda:
                dev = torch.device("cuda", hvd.local_rank() % gpus)
                for k in range(5):   # repeated: a late staging copy shows up as a mismatch
                    x = data(numel, dtype, 3).to(dev)
                    y = hvd.allreduce(x, op=hvd.Average, name=f"g{dtype}{numel}.{k}")
                    y.mul_(1.0)   # a kernel queued right after: reads what the copy left
                    gerr = (y.cpu().double() - cpu.double()).abs().max().item()
                    out["checks"].append({"device": "cuda", "dtype": str(dtype),
                                          "numel": numel, "err": gerr})
    out["ok"] = all(c["err"] == 0.0 for c in out["checks"])
    print("DOCTOR " + json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


def rank_reports(stdout: str) -> list[dict]:
    """The ranks' `DOCTOR {...}` reports. mpirun forwards the ranks' output through one stream
    and may join two ranks' lines into one, so each report is decoded where it starts, not
    per line."""
    decoder = json.JSONDecoder()
    return [decoder.raw_decode(part)[0] for part in stdout.split("DOCTOR ")[1:]
            if part.startswith("{")]


def run_check(prefix: list[str], np_: int = 2, timeout: float = 300) -> dict:
    """Launch the 2-rank check with `prefix` (horovodrun / mpirun); collect the ranks' lines."""
    env = dict(os.environ, **launch.root_env())
    cmd = [*prefix, sys.executable, "-m", "prsgd.doctor", "--worker"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", "ranks": []}
    try:
        ranks = rank_reports(p.stdout)
    except ValueError as e:
        return {"ok": False, "error": [f"unreadable rank report: {e}"], "ranks": []}
    ranks.sort(key=lambda r: r["rank"])  # ranks print in whatever order they finish
    res = {"ok": p.returncode == 0 and len(ranks) == np_ and all(r["ok"] for r in ranks),
           "ranks": ranks, "returncode": p.returncode}
    if not res["ok"]:
        res["error"] = (p.stderr or p.stdout).strip().splitlines()[-5:]
    return res


def facts() -> dict:
    import torch
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    built = hvd_build.installed_build()
    built.pop("key", None)
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "nccl_runtime": ".".join(map(str, torch.cuda.nccl.version()))
            if torch.version.cuda and torch.cuda.is_available() else None,
            "gpus": gpus, "horovod": built, "build": build_flags(),
            "cuda_tensor_path": allreduce_path(built, "cuda", None) if built else None}


def report(f: dict, checks: dict) -> str:
    h = f["horovod"]
    lines = [f"torch            {f['torch']} (CUDA {f['torch_cuda'] or 'none: CPU build'})",
             f"GPUs             {len(f['gpus'])}" + (": " + ", ".join(f["gpus"]) if f["gpus"] else "")]
    if not h:
        lines.append("horovod          not installed (make install)")
    else:
        ops = ", ".join(k for k in ("gloo", "mpi", "nccl") if h.get(k)) or "none"
        lines += [f"horovod          {h.get('version')}: built with {ops}",
                  f"build key        {f['build'].get('key')}",
                  f"CUDA allreduce   {f['cuda_tensor_path']}"
                  + ("" if h.get("nccl") else "  (no NCCL: CUDA tensors go through host memory)")]
        if f["torch_cuda"] and not h.get("nccl"):
            lines.append("WARNING          CUDA torch but Horovod has no NCCL: rebuild with "
                         "scripts/install_horovod.sh (see README, GPU box)")
    for name, c in checks.items():
        if c.get("skipped"):
            lines.append(f"check {name:<10} skipped: {c['skipped']}")
            continue
        devs = sorted({ch["device"] for r in c["ranks"] for ch in r["checks"]})
        worst = max((ch["err"] for r in c["ranks"] for ch in r["checks"]), default=None)
        ctrl = c["ranks"][0]["controller"] if c["ranks"] else "?"
        lines.append(f"check {name:<10} {'ok' if c['ok'] else 'FAILED'}: {len(c['ranks'])} "
                     "rank(s), controller "
                     f"{ctrl}, devices {'+'.join(devs) or '-'}, max |error| {worst}"
                     + ("" if c["ok"] else f"  {c.get('error')}")
                     + "".join(f"  (CUDA not checked: {r['cuda_skipped']})"
                               for r in c["ranks"][:1] if r.get("cuda_skipped")))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prsgd.doctor", description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the findings as JSON to this file")
    p.add_argument("--no-check", action="store_true", help="facts only, no 2-rank allreduce")
    a = p.parse_args(argv)
    if a.worker:
        return worker()
    f = facts()
    checks: dict = {}
    if not a.no_check and f["horovod"].get("torch"):
        checks["gloo"] = run_check(launch.horovodrun_prefix(2, gloo=True))
        if len(f["gpus"]) == 1 and f["horovod"].get("nccl"):
            checks["nccl-1gpu"] = run_check(launch.horovodrun_prefix(1, gloo=True), np_=1)
        if not f["horovod"].get("mpi"):
            checks["mpirun"] = {"skipped": "Horovod built without MPI", "ok": True}
        elif launch.find_tool("mpirun") is None:
            checks["mpirun"] = {"skipped": "no mpirun on PATH", "ok": True}
        else:
            checks["mpirun"] = run_check(launch.mpirun_prefix(2))
    print(report(f, checks))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"facts": f, "checks": checks}, fh, indent=1)
    return 0 if all(c["ok"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
