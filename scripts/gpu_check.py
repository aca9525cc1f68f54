#!/usr/bin/env python3
"""On a CUDA machine: does the captured step compute what the eager step computes, and does a
packed sweep of 2 intervals equal the 2 runs done separately? Prints max relative differences."""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import torch  # noqa: E402

from prsgd.core import config as config_mod  # noqa: E402
from prsgd.core.loop import Trainer  # noqa: E402


def final_state(args):
    cfg = config_mod.from_args(args + ["--out", tempfile.mkdtemp(), "--progress", "false"])
    t = Trainer(cfg)
    t.train()
    fm, n = t.fm, t.replicas
    return torch.stack([torch.cat([fm.flat[o:o + k].view(n, -1)[r] for o, k in fm.segments])
                        for r in range(n)]).double().cpu()


def rel(a, b):
    return float((a - b).norm() / b.norm())


base = ["--preset", "smoke", "--backend", "packed", "--workers", "2", "--seed", "3",
        "--max-steps", "40", "--device", "cuda"]
for prec in ("fp32", "fp64"):
    e = final_state(base + ["--intervals", "1,4", "--precision", prec])
    g = final_state(base + ["--intervals", "1,4", "--precision", prec, "--cuda-graph"])
    s1 = final_state(base + ["--interval", "1", "--precision", prec])
    s4 = final_state(base + ["--interval", "4", "--precision", prec])
    print(f"{prec}: graph vs eager rel {rel(g, e):.2e}; packed(1,4) vs separate: "
          f"I=1 {rel(e[:2], s1):.2e} I=4 {rel(e[2:], s4):.2e}", flush=True)
