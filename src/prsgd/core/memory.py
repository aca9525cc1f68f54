"""Does the run fit in memory? Checked before the replicas are allocated (issue 21 §5).

`--workers 1000` on the packed backend used to be OOM-killed with no message: a process holds
every one of its replicas (packed workers x packed runs). The estimate, per replica:
  - the model state, STATE_COPIES times: weights, gradients, momentum and the averaging round's
    temporary (the flat buffers of core/flat.py), and
  - one batch's activations that the backward keeps: measured, not guessed, as the bytes autograd
    saves during the forward of one image of this model (torch.autograd.graph.saved_tensors_hooks).
The run is refused when the estimate exceeds the memory available now (MemAvailable on a CPU,
free device memory on CUDA), with one line naming the flag, the estimate and what is available.
It is an estimate: what it refuses could never have run; close to the limit a run may still fail.
"""
from __future__ import annotations

import torch

STATE_COPIES = 4


def saved_bytes_per_image(single: torch.nn.Module, sample: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward of one image (one replica's model, fp32)."""
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        single(sample.float()).sum()
    return saved


def available_bytes(device: torch.device) -> int | None:
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        import psutil
        return psutil.virtual_memory().available
    except Exception:       # unknown: do not guess
        return None


def estimate_bytes(single: torch.nn.Module, sample: torch.Tensor, *, replicas: int, batch: int,
                   itemsize: int) -> int:
    floats = sum(t.numel() for t in (*single.parameters(), *single.buffers()))
    per_image = saved_bytes_per_image(single, sample) * itemsize // 4
    return replicas * (floats * itemsize * STATE_COPIES + batch * per_image)


def check_replicas_fit(make_single, sample: torch.Tensor, *, replicas: int, workers: int,
                       runs: int, batch: int, itemsize: int, device: torch.device) -> None:
    """ConfigError when `replicas` copies of the model (make_single(): one replica, built with
    the random state left as it was) cannot fit in the memory available."""
    from prsgd.core.errors import ConfigError
    free = available_bytes(device)
    if free is None:
        return
    with torch.random.fork_rng(devices=[]):     # the run's own seeded init stays untouched
        single = make_single()
    need = estimate_bytes(single, sample[:1], replicas=replicas, batch=batch, itemsize=itemsize)
    if need > free:
        what = f"{workers} packed workers" + (f" x {runs} runs" if runs > 1 else "") \
            if replicas > 1 else "one worker"
        raise ConfigError(f"--workers: {what} need about {need / 2**30:.1f} GiB (model state and "
                          f"one batch of {batch} per worker), more than the "
                          f"{free / 2**30:.1f} GiB available on {device.type}")
