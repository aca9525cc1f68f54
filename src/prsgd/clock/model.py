"""A modelled wall-clock for any run: compute per local step + alpha-beta ring collectives.

    modelled seconds = local steps x compute per step (a round waits for the slowest worker)
                     + per averaging round, per level (inside a node / across nodes), for each
                       collective of the round: overhead + its alpha-beta cost

Each collective has its own alpha-beta cost from the same link (clock/collectives.py: the ring
allreduce, reduce-scatter and allgather). `overhead` is Horovod's per-collective cost: a
submitted collective waits for the background thread's next cycle (HOROVOD_CYCLE_TIME: 5 ms in
2018's Horovod, 1 ms since 0.21, 0.1 ms on our GPU ranks), half a cycle on average, plus the
collective library's fixed launch latency.

What a round sends: uncompressed, one allreduce of the averaged buffer (the flat parameters +
BN statistics, bytes taken from the run's counters); a compressed run (config `compressor`
fp16/bf16/int8/topk, `topk_ratio`) is predicted from its payload, not its counters: the
parameters' payload (`prsgd.compress`: the compressor's `payload_bytes(P)` through its
`collective`: allreduce for the casts, allgather for int8 and top-k) + one exact allreduce of
the rest of the buffer (BN statistics, at the run's precision): two collectives, two overheads.
Its encoding and decoding cost CPU time on every worker, per round, from the calibration's
`compute.codecs` when it has one (clock/codecs.py: measured with the round's own code).

A group whose ranks sit on one node uses the `intra` link, a group spanning nodes the `inter`
one: in a ring laid out node by node every step is as slow as its slowest hop, the one between
nodes (so Hier-AVG's local rounds cost the intra link and its global rounds the inter link).
Ranks fill nodes in order (`-H a:k,b:k`).

Rounds that overlap compute cost only what the compute does not hide: a bucketed gradient
allreduce during backward (`gradient_allreduce --bucket-mb`, `overlapped_round_seconds`) and a
round applied TAU local steps after it started (`--overlap-delay`, `overlapped`).

A calibration is one JSON file (`Calibration.load`) with a `compute` part and a `network` part,
each with its provenance: measured (`python -m prsgd.clock calibrate-compute|calibrate-network`,
see `clock/calibrate.py`, fitted by `clock/fit.py`) or a named preset (`clock/presets.py`,
with sources and assumptions).

The command line (`python -m prsgd.clock predict|combine|presets|calibrate-*`): clock/cli.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prsgd.clock import codecs
from prsgd.clock.checks import CalibrationError, check_calibration, read_document
from prsgd.clock.collectives import ALLREDUCE, Link

GLOBAL, LOCAL = "global", "local"
KIND = "prsgd-clock-calibration"




@dataclass
class Calibration:
    name: str
    compute_s: float | None                  # one worker's local step (None: network only)
    ranks_per_node: int = 1
    overhead_s: float = 0.0                  # per collective (Horovod cycle wait + launch)
    links: dict = field(default_factory=dict)        # "intra" / "inter" -> Link
    compute_per_rank: tuple = ()             # measured per rank, when measured under horovodrun
    codecs: dict = field(default_factory=dict)       # compute.codecs (clock/codecs.py), if measured
    doc: dict = field(default_factory=dict)  # the JSON itself (sources, provenance)

    # --- reading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Calibration":
        path = Path(path)
        doc = read_document(path)
        return cls.from_dict(doc, default_name=path.stem, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict, default_name: str = "calibration",
                  source: str = "") -> "Calibration":
        """Every number is checked first (prsgd.clock.checks): a bad one is refused naming
        `source` (the file) and the field."""
        check_calibration(doc, source or default_name, KIND)
        comp, net = doc.get("compute") or {}, doc.get("network") or {}
        links = {level: Link(float(d["alpha_s"]), float(d["bandwidth_Bps"]),
                             tuple((c, float(f["alpha_s"]), float(f["bandwidth_Bps"]))
                                   for c, f in (d.get("collectives") or {}).items()))
                 for level, d in (net.get("levels") or {}).items()}
        return cls(name=doc.get("name") or default_name,
                   compute_s=comp.get("seconds_per_step"),
                   ranks_per_node=int(net.get("ranks_per_node", 1)),
                   overhead_s=float(net.get("overhead_s", 0.0)), links=links,
                   compute_per_rank=tuple(comp.get("per_rank_seconds_per_step") or ()),
                   codecs=comp.get("codecs") or {}, doc=doc)

    # --- the model -------------------------------------------------------------------------
    def link_for(self, group) -> Link:
        nodes = {r // self.ranks_per_node for r in group}
        level = "inter" if len(nodes) > 1 else "intra"
        if level not in self.links:
            raise CalibrationError(f"{self.name}: a group of ranks {tuple(group)} needs the "
                                   f"{level!r} link, which this calibration does not have "
                                   f"(ranks_per_node = {self.ranks_per_node})")
        return self.links[level]

    def collective_seconds(self, group, nbytes: float, collective: str = ALLREDUCE) -> float:
        if len(group) < 2:
            return 0.0
        return self.overhead_s + self.link_for(group).seconds(collective, len(group), nbytes)

    def round_seconds(self, groups, nbytes: float, collectives: tuple = ()) -> float:
        """Groups average concurrently; the round ends with the slowest group. A round is one
        allreduce of `nbytes`, or the `collectives` given, (name, bytes) one after the other."""
        parts = collectives or ((ALLREDUCE, nbytes),)
        return max((sum(self.collective_seconds(g, b, c) for c, b in parts) for g in groups),
                   default=0.0)

    def codec_seconds(self, codec: tuple, workers: int) -> float:
        """Encode/decode seconds of one compressed round; `codec` = (label, collective, numel)
        (RunShape.codec), () for an uncompressed round."""
        if not codec:
            return 0.0
        label, collective, numel = codec
        return codecs.round_seconds(self.codecs, label, collective, numel, workers, self.name)

    def step_seconds(self, workers: int, slowdown=()) -> list[float]:
        """Each worker's local step: measured per rank when the calibration has one per worker,
        else the one measured value; times the run's simulated slowdown factors."""
        if self.compute_s is None:
            raise CalibrationError(f"{self.name}: has no compute part")
        base = list(self.compute_per_rank) if len(self.compute_per_rank) == workers \
            else [float(self.compute_s)] * workers
        factors = list(slowdown) if len(slowdown) == workers else [1.0] * workers
        return [b * f for b, f in zip(base, factors)]


# Backward's share of a local step's compute, for rounds that overlap backward (gradient_allreduce
# --bucket-mb). ASSUMED, not measured: backward costs about twice the forward (a gradient for the
# layer's input and one for its weights: Kaplan et al. 2020, arXiv:2001.08361, Sec. 2.1, count
# 2N FLOPs forward and 4N backward per token), so 2/3 of forward + backward.
BACKWARD_SHARE = 2 / 3


def overlapped_round_seconds(cal: "Calibration", group, nbytes: float, buckets: int,
                             compute_s: float) -> float:
    """The seconds a bucketed gradient allreduce adds to a step when it overlaps backward (DDP,
    Horovod's DistributedOptimizer). Assumed: k equal buckets, ready at equal intervals through
    backward (B = BACKWARD_SHARE x compute), allreduced one after another, each costing
    c = overhead + ring(nbytes / k). The last ends at max(B + c, B/k + k c) after backward
    began, so what backward does not hide is max(c, k c - B (k-1)/k): k = 1 is the plain round
    (nothing hidden, the bucket is ready only when backward ends); more buckets hide up to B
    but each pays the per-collective overhead and the ring's 2(n-1) latencies again."""
    k = max(int(buckets), 1)
    c = cal.collective_seconds(group, nbytes / k)
    return max(c, k * c - BACKWARD_SHARE * compute_s * (k - 1) / k)


@dataclass
class RunShape:
    """What the clock needs to know about a run, from its config.json: N, the averaged buffer,
    the simulated slowdown, and what its algorithm says (`Algorithm.clock_shape`): the groups of
    a local round, and for algorithms whose rounds are not counted in steps, each worker's steps
    per round or the time budget of a round."""
    workers: int
    local_groups: tuple = ()         # groups of a local round (Hier-AVG); () = none
    round_steps: tuple = ()          # each worker's local steps per round (Algorithm 3)
    round_budget_s: float = 0.0      # seconds of local steps per round (Algorithm 3, budget)
    overlap_steps: int = 0           # local steps a global round runs behind (--overlap-delay)
    slowdown: tuple = ()
    payload_bytes: float = 0.0       # the averaged buffer of one worker
    overlap_backward: bool = False   # global rounds are bucketed gradient allreduces in backward
    buckets: int = 1                 # ... in this many buckets (config.json derived.grad_buckets)
    collectives: tuple = ()          # a compressed round's (collective, bytes); () = uncompressed
    codec: tuple = ()                # ... and its (compressor label, collective, parameters)

    @classmethod
    def from_config(cls, meta: dict) -> "RunShape":
        from prsgd.algorithms import clock_shape
        cfg, derived = meta["config"], meta.get("derived", {})
        n = int(derived.get("workers") or cfg.get("workers") or
                meta.get("provenance", {}).get("world_size") or 1)
        itemsize = 8 if cfg.get("precision") == "fp64" else 4
        floats = derived.get("averaged_floats") or 0
        comp = run_compressor(cfg, derived)
        return cls(workers=n, **clock_shape(cfg, n), slowdown=tuple(cfg.get("slowdown") or ()),
                   payload_bytes=floats * itemsize, buckets=int(derived.get("grad_buckets") or 1),
                   collectives=compressed_round(comp, derived, itemsize),
                   codec=(comp.label(), comp.collective, int(derived["param_floats"]))
                   if comp else ())

    def groups(self, level: str) -> tuple:
        if level == LOCAL and self.local_groups:
            return self.local_groups
        return (tuple(range(self.workers)),)


def run_compressor(cfg: dict, derived: dict):
    """The compressor of a run's config.json, or None when it is uncompressed (no `compressor`,
    or "none")."""
    name = cfg.get("compressor") or "none"
    if name == "none":
        return None
    from prsgd.compress import REGISTRY, make_compressor
    if name not in REGISTRY:
        raise CalibrationError(f"compressor {name!r}: the clock knows {', '.join(REGISTRY)}")
    if not derived.get("param_floats"):
        raise CalibrationError(f"a run compressed with {name!r} needs derived.param_floats in "
                               "its config.json (the parameters' count) to be costed")
    try:
        return make_compressor(name, ratio=cfg.get("topk_ratio")) if name == "topk" \
            else make_compressor(name)
    except ValueError as e:
        raise CalibrationError(f"compressor {name!r} of this run: {e}") from None


def compressed_round(comp, derived: dict, itemsize: int) -> tuple:
    """The collectives of one round of a run compressed with `comp`: the parameters' payload
    through the compressor's collective, then an exact allreduce of the rest of the averaged
    buffer (BN statistics). () for an uncompressed run (comp None)."""
    if comp is None:
        return ()
    params = int(derived["param_floats"])
    exact = (int(derived.get("averaged_floats") or 0) - params) * itemsize
    return ((comp.collective, float(comp.payload_bytes(params))), (ALLREDUCE, float(exact)))


def model_counts(cal: Calibration, shape: RunShape, steps: float, rounds: float,
                 rounds_local: float = 0.0, bytes_global: float | None = None,
                 bytes_local: float | None = None) -> dict:
    """Modelled seconds of `steps` local steps (of one worker) and the given rounds per level.
    `bytes_*`: the buffer bytes of one worker summed over that level's rounds (metrics.csv's
    counters); None takes the run's payload per round. A compressed run's rounds cost its
    `shape.collectives` instead (its payload, from the config)."""
    per = cal.step_seconds(shape.workers, shape.slowdown)
    if shape.round_steps:
        # worker i makes round_steps[i] steps per round; the round waits for the slowest.
        compute = rounds * max(i * t for i, t in zip(shape.round_steps, per))
    elif shape.round_budget_s:
        compute = rounds * max(shape.round_budget_s, max(per))   # every round lasts ~the budget
    else:
        compute = steps * max(per)          # every round waits for the slowest worker
    out = {"compute_s": compute}
    for level, n_rounds, total in ((GLOBAL, rounds, bytes_global), (LOCAL, rounds_local,
                                                                     bytes_local)):
        payload = total / n_rounds if total is not None and n_rounds else shape.payload_bytes
        if level == GLOBAL and shape.overlap_backward:
            cost = max(overlapped_round_seconds(cal, g, payload, shape.buckets, max(per))
                       for g in shape.groups(level))
        else:
            cost = overlapped(cal.round_seconds(shape.groups(level), payload, shape.collectives),
                              shape.overlap_steps * max(per) if level == GLOBAL else 0.0)
        if level == GLOBAL:     # encoding and decoding run on the worker: nothing hides them
            cost += cal.codec_seconds(shape.codec, shape.workers)
        out[f"comm_{level}_s"] = n_rounds * cost if n_rounds else 0.0
    out["seconds"] = out["compute_s"] + out["comm_global_s"] + out["comm_local_s"]
    return out


def overlapped(round_s: float, hidden_s: float) -> float:
    """The seconds a round costs when its collective runs behind `hidden_s` of local steps
    (--overlap-delay): only what the steps do not cover. (A run's last round, applied at once,
    is costed as overlapped too: one round in a run.)"""
    return max(0.0, round_s - hidden_s)


def model_run(cal: Calibration, meta: dict, metrics) -> "pandas.DataFrame":
    """Per epoch row of metrics.csv: modelled compute, global and local communication and the
    cumulative modelled seconds (columns model_*)."""
    import pandas as pd
    shape = RunShape.from_config(meta)
    rows = []
    for _, r in metrics.iterrows():
        total, local = _num(r.get("bytes")), _num(r.get("bytes_local"))
        m = model_counts(cal, shape, _num(r["step"]), _num(r.get("rounds")),
                         _num(r.get("rounds_local")), bytes_global=total - local,
                         bytes_local=local)
        rows.append({f"model_{k}": v for k, v in m.items()})
    return pd.DataFrame(rows, index=metrics.index)


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if f != f else f
