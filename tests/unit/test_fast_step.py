"""The captured step, the packed-sweep CLI, bad input, and the benchmark's code paths.

CUDA-graph tests skip without a GPU (CI has none); they ran on an H100 (see README)."""
from __future__ import annotations


import pytest
import torch



cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_graph_step_equals_eager_step(tmp_path):
    from prsgd.core import config as config_mod
    from prsgd.core.loop import Trainer

    def final(extra):
        cfg = config_mod.from_args(["--preset", "smoke", "--backend", "packed", "--workers", "2",
                                    "--intervals", "1,4", "--max-steps", "20", "--device",
                                    "cuda", "--out", str(tmp_path), "--progress", "false",
                                    *extra])
        t = Trainer(cfg)
        t.train()
        return t.fm.flat.clone()

    eager, graph = final([]), final(["--cuda-graph"])
    assert torch.equal(eager, graph)
