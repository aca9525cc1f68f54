"""Named networks for the clock, for what we cannot measure here: each with sources and
assumptions, copied into every calibration file made from it.

All four are NCCL rings between 8 GPU ranks (Figure 3's N = 8). Their constants come from NCCL's
own cost model, which is the same alpha-beta shape as ours: a ring allreduce costs a base
latency + nsteps x a per-step hardware latency + bytes / bandwidth (src/graph/tuning.cc), with
link bandwidths from src/graph/topo.h. We take the Simple protocol's latencies (NCCL picks LL128
or Simple for ~1 MB; Simple's are the larger, so the model errs towards costlier rounds).
"""
from __future__ import annotations

NCCL = "https://github.com/NVIDIA/nccl/blob/5067397c2676d5aed50042fc39e5c8ee96eb0027/src/graph/"
SOURCES = {
    "nccl_tuning": NCCL + "tuning.cc (ncclTunerConstantsDefaults: Ring base latency 8.4 us "
                   "(Simple); per-step hwLatencies Ring/Simple: NVLINK 3.4 us, PCI 5.7 us, "
                   "NET 14.0 us)",
    "nccl_topo": NCCL + "topo.h (SM70_NVLINK_BW 20.0 GB/s per NVLink of a V100; "
                 "PCI_BW 12.0 GB/s 'PCI Gen3 x16'; BDW_QPI_BW 6.0 / SKL_QPI_BW 10.0 GB/s)",
    "busbw": "https://github.com/NVIDIA/nccl-tests/blob/a0b82b2260cf5152b9f8c061bbf7eaf0ba096432/"
             "doc/PERFORMANCE.md (allreduce bus bandwidth B: t = S/B x 2(n-1)/n)",
    "cycle": "https://github.com/horovod/horovod/pull/2468 (default HOROVOD_CYCLE_TIME 5 ms -> "
             "1 ms, Horovod 0.21, Nov 2020); horovod 0.28.1 common/operations.cc RunLoopOnce "
             "(the background thread sleeps until the next cycle before it performs any "
             "collective)",
    "v100": "NVIDIA Tesla V100 GPU Architecture whitepaper (2017): six NVLink 2.0 links per "
            "V100; DGX-1 joins 8 V100s in a hybrid cube-mesh",
}

# Our GPU ranks set HOROVOD_CYCLE_TIME=0.1 ms (backends.horovod.GPU_CYCLE_TIME_MS; results/bench/comm-*).
DEFAULT_CYCLE_MS = 0.1
NCCL_RING_BASE_S = 8.4e-6
# TCP/IPv4 payload per Ethernet frame at MTU 1500 with TCP timestamps: 1448 bytes of the 1538
# that a frame occupies on the wire (preamble 8 + header 14 + 1500 + FCS 4 + gap 12).
TCP_EFFICIENCY = 1448 / 1538

PRESETS = {
    "nvlink-box": {
        "description": "8 GPUs in one box joined by NVLink (DGX-1 V100 kind), NCCL ring",
        "ranks_per_node": 8,
        "intra": {"alpha_s": 3.4e-6, "bandwidth_Bps": 6 * 20.0e9},
        "assumptions": ["NCCL's rings use all six NVLinks of a V100 at NCCL's 20 GB/s each "
                        "(bus bandwidth 120 GB/s)", "per-step latency: NCCL's NVLINK Ring "
                        "Simple constant"],
        "sources": ["nccl_tuning", "nccl_topo", "v100", "busbw", "cycle"],
    },
    "pcie3-box": {
        "description": "8 GPUs in one box over PCIe gen3 x16 (the 2018 kind of 8-GPU server), "
                       "NCCL ring",
        "ranks_per_node": 8,
        "intra": {"alpha_s": 5.7e-6, "bandwidth_Bps": 12.0e9},
        "assumptions": ["bus bandwidth = NCCL's PCI gen3 x16 figure, 12 GB/s (GPUs behind PCIe "
                        "switches; a ring that crosses the CPU sockets' QPI would get 6-10 GB/s "
                        "by NCCL's own figures)", "per-step latency: NCCL's PCI Ring Simple "
                        "constant"],
        "sources": ["nccl_tuning", "nccl_topo", "busbw", "cycle"],
    },
    "25gbe": {
        "description": "8 nodes of 1 GPU over 25 Gbit/s Ethernet (TCP), NCCL ring",
        "ranks_per_node": 1,
        "inter": {"alpha_s": 14.0e-6, "bandwidth_Bps": 25e9 / 8 * TCP_EFFICIENCY},
        "assumptions": ["bus bandwidth = line rate x TCP payload efficiency at MTU 1500 "
                        "(1448/1538): 2.94 GB/s", "per-step latency: NCCL's NET Ring Simple "
                        "constant (an InfiniBand-class figure; a TCP stack is slower, which "
                        "matters little at 1 MB)"],
        "sources": ["nccl_tuning", "busbw", "cycle"],
    },
    "1gbe": {
        "description": "8 nodes of 1 GPU over 1 Gbit/s Ethernet (TCP), NCCL ring",
        "ranks_per_node": 1,
        "inter": {"alpha_s": 14.0e-6, "bandwidth_Bps": 1e9 / 8 * TCP_EFFICIENCY},
        "assumptions": ["bus bandwidth = line rate x TCP payload efficiency at MTU 1500 "
                        "(1448/1538): 118 MB/s", "per-step latency: NCCL's NET Ring Simple "
                        "constant (bandwidth dominates: 16 ms per 1 MB round)"],
        "sources": ["nccl_tuning", "busbw", "cycle"],
    },
}


def overhead_s(cycle_time_ms: float) -> float:
    """Mean wait for Horovod's next cycle (a submission at a uniformly random phase waits half a
    cycle) plus NCCL's ring base latency."""
    return cycle_time_ms / 2000 + NCCL_RING_BASE_S


def network_preset(name: str, cycle_time_ms: float | None = None) -> dict:
    """The network part of a calibration file for preset `name`."""
    if name not in PRESETS:
        raise KeyError(f"no network preset {name!r} (known: {', '.join(PRESETS)})")
    p = PRESETS[name]
    cycle = DEFAULT_CYCLE_MS if cycle_time_ms is None else cycle_time_ms
    levels = {lv: dict(p[lv], source="preset") for lv in ("intra", "inter") if lv in p}
    return {
        "preset": name, "description": p["description"], "ranks_per_node": p["ranks_per_node"],
        "levels": levels, "cycle_time_ms": cycle, "overhead_s": overhead_s(cycle),
        "overhead_rule": "cycle_time/2 (mean wait for Horovod's next cycle) + NCCL ring base "
                         "latency 8.4 us",
        "assumptions": p["assumptions"] + [f"Horovod cycle time {cycle:g} ms"],
        "sources": [SOURCES[s] for s in p["sources"]],
    }
