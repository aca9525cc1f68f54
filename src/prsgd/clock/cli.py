"""`python -m prsgd.clock`: predict runs' clocks, combine and list calibrations, calibrate
(prsgd.clock.calibrate's subcommands). The model itself is prsgd.clock.model.

    python -m prsgd.clock predict RUN_DIR... --clock CAL.json     # measured vs modelled
    python -m prsgd.clock combine --compute C.json --network preset:pcie3-box --out CAL.json
    python -m prsgd.clock presets
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prsgd.clock.checks import (CalibrationError, check_compute, check_network, dumps,
                                nonnegative_float, nonnegative_int, read_document)
from prsgd.clock.model import KIND, Calibration, model_run


def load_run_dir(run_dir) -> tuple:
    """load_run, with a directory that is not a run (no config.json) named as such."""
    from prsgd.records import rundir
    from prsgd.records.results import load_run
    path = Path(run_dir)
    if not path.is_dir():
        raise CalibrationError(f"{path}: no such run directory")
    if not (path / rundir.CONFIG).is_file():
        raise CalibrationError(f"{path}: not a run directory (it has no {rundir.CONFIG})")
    return load_run(path)


def cmd_predict(args) -> int:
    cal = Calibration.load(args.clock)
    if args.ranks_per_node:
        cal.ranks_per_node = args.ranks_per_node
    runs = [(run_dir, *load_run_dir(run_dir)) for run_dir in args.runs]   # all, before output
    print(f"clock: {cal.name}")
    print(f"{'run':<28} {'algorithm':<10} {'I':>4} {'measured s':>11} {'modelled s':>11} "
          f"{'error':>7}")
    for run_dir, meta, df in runs:
        if df.empty:
            print(f"{Path(run_dir).name:<28} (no metrics rows)")
            continue
        last = df.iloc[-1]
        m = model_run(cal, meta, df.tail(1)).iloc[0]
        measured, modelled = float(last["train_seconds"]), float(m["model_seconds"])
        print(f"{Path(run_dir).name:<28} {meta['config']['algorithm']:<10} "
              f"{meta['config']['interval']:>4} {measured:>11.2f} {modelled:>11.2f} "
              f"{100 * (modelled - measured) / measured:>+6.1f}%")
    return 0


def cmd_combine(args) -> int:
    from prsgd.clock.presets import network_preset
    parts = {}
    for key, src in (("compute", args.compute), ("network", args.network)):
        if src.startswith("preset:"):
            if key != "network":
                raise CalibrationError("--compute: presets exist for networks only")
            parts[key] = network_preset(src.split(":", 1)[1], cycle_time_ms=args.cycle_time_ms)
        else:
            doc = read_document(src)
            if key == "compute" and "rows" in doc:      # a `make bench` file (benchmarks/bench.py)
                parts[key] = compute_from_bench(doc, args.compute_variant, src)
                continue
            if not isinstance(doc.get(key), dict) or not doc[key]:
                raise CalibrationError(f"{src}: has no {key!r} part (a JSON object)")
            parts[key] = doc[key]
            if key == "compute" and args.compute_variant:
                parts[key] = select_variant(parts[key], args.compute_variant, src)
    for key, src in (("compute", args.compute), ("network", args.network)):
        try:    # each part's numbers, named by the file (or preset) they came from
            (check_compute if key == "compute" else check_network)(parts[key], key)
        except CalibrationError as e:
            raise CalibrationError(f"{src}: {e}") from None
    if args.compute_also:
        parts["compute"] = mean_compute([parts["compute"]] + [
            _compute_part(src) for src in args.compute_also], [args.compute] + args.compute_also)
    doc = {"kind": KIND, "name": args.name, **parts,
           "combined_from": {"compute": [args.compute] + args.compute_also if args.compute_also
                             else args.compute, "network": args.network}}
    Calibration.from_dict(doc, source=f"--compute {args.compute} --network {args.network}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(dumps(doc))     # validated above: no NaN can reach the file
    print(args.out)
    return 0


def _compute_part(src: str) -> dict:
    doc = read_document(src)
    if not isinstance(doc.get("compute"), dict) or not doc["compute"]:
        raise CalibrationError(f"{src}: has no 'compute' part (a JSON object)")
    try:
        check_compute(doc["compute"], "compute")
    except CalibrationError as e:
        raise CalibrationError(f"{src}: {e}") from None
    return doc["compute"]


def mean_compute(parts: list, sources: list) -> dict:
    """One compute part from several measurements of the same ranks (e.g. before and after a
    lab's runs, which bracket the drift of a shared machine's cores): each rank's mean step, the
    slowest rank's mean as `seconds_per_step`; the first part's other fields (codecs included),
    every measurement kept under `measurements`."""
    per_rank = [p.get("per_rank_seconds_per_step") or [p["seconds_per_step"]] for p in parts]
    if len({len(r) for r in per_rank}) != 1:
        raise CalibrationError("--compute-also: the measurements have different numbers of "
                               f"ranks ({', '.join(str(len(r)) for r in per_rank)})")
    means = [sum(col) / len(col) for col in zip(*per_rank)]
    out = {k: v for k, v in parts[0].items() if k not in ("variants",)}
    out.update(seconds_per_step=max(means), per_rank_seconds_per_step=means,
               statistic=f"each rank's mean over {len(parts)} measurements (their own statistic: "
                         f"{parts[0].get('statistic', 'mean over timed steps')}); "
                         "seconds_per_step = the slowest rank",
               measurements=[{"source": src, "seconds_per_step": p["seconds_per_step"],
                              "per_rank_seconds_per_step": p.get("per_rank_seconds_per_step"),
                              "time": (p.get("provenance") or {}).get("time")}
                             for src, p in zip(sources, parts)])
    return out


def select_variant(compute: dict, variant: str, src: str) -> dict:
    """A compute part can hold several measured variants (eager, graph, ...): pick one."""
    variants = compute.get("variants") or {}
    if not isinstance(variants, dict) or variant not in variants:
        raise CalibrationError(f"{src}: no compute variant {variant!r} "
                               f"(has: {', '.join(variants) or 'none'})")
    out = {k: v for k, v in compute.items() if k != "variants"}
    out.update(variants[variant], variant=variant)
    return out


def compute_from_bench(bench: dict, variant: str, src: str) -> dict:
    """The compute part from one row of a `make bench` JSON (benchmarks/bench.py: our StepRunner step,
    timed over `steps` steps after `warmup`)."""
    try:
        rows = {r["variant"]: r for r in bench["rows"]}
    except (KeyError, TypeError):
        raise CalibrationError(f"{src}: its rows are not `make bench` rows (each needs a "
                               "\"variant\")") from None
    if variant not in rows:
        raise CalibrationError(f"{src}: no bench variant {variant!r} (has: {', '.join(rows)})")
    r = rows[variant]
    if r.get("replicas", 1) != 1:
        raise CalibrationError(f"{src}: variant {variant!r} steps {r['replicas']} packed "
                               "replicas; the clock needs one worker's step")
    from prsgd.clock.checks import number
    ms = number(r.get("ms_per_step"), f"{src}: rows[{variant!r}].ms_per_step", "> 0")
    return {"seconds_per_step": ms / 1000, "variant": variant,
            "device": bench.get("device"), "options": {k: r.get(k) for k in (
                "precision", "channels_last", "cuda_graph")},
            "source": f"measured: `make bench` ({Path(src).name}, row {variant!r}: "
                      f"{r.get('steps')} timed steps, mean)",
            "provenance": {k: bench.get(k) for k in ("git", "torch", "python", "host", "time",
                                                      "device", "batch")}}


def cmd_presets(args) -> int:
    from prsgd.clock.presets import PRESETS
    for name, p in PRESETS.items():
        print(f"{name:<14} {p['description']}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prsgd.clock", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("predict", help="measured vs modelled train_seconds of run directories")
    q.add_argument("runs", nargs="+")
    q.add_argument("--clock", required=True, help="a calibration JSON")
    q.add_argument("--ranks-per-node", type=nonnegative_int, default=0,
                   help="override the calibration's ranks per node")
    q.set_defaults(fn=cmd_predict)
    c = sub.add_parser("combine", help="one calibration from a compute and a network part")
    c.add_argument("--compute", required=True, help="a JSON with a compute part")
    c.add_argument("--compute-variant", default="", help="pick one measured variant")
    c.add_argument("--compute-also", action="append", default=[], metavar="C.json",
                   help="more compute measurements of the same ranks: the step is each rank's "
                        "mean over all of them (e.g. before and after the runs)")
    c.add_argument("--network", required=True, help="a JSON with a network part, or preset:NAME")
    c.add_argument("--cycle-time-ms", type=nonnegative_float, default=None,
                   help="Horovod cycle time for a preset (default: the preset's)")
    c.add_argument("--name", required=True)
    c.add_argument("--out", required=True)
    c.set_defaults(fn=cmd_combine)
    s = sub.add_parser("presets", help="list the named network presets")
    s.set_defaults(fn=cmd_presets)
    from prsgd.clock.calibrate import add_parsers
    add_parsers(sub)
    args = p.parse_args(argv)
    from prsgd.records.rundir import RecordError
    try:
        return args.fn(args)
    except (CalibrationError, RecordError, FileNotFoundError, KeyError) as e:
        print(f"prsgd.clock: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
