"""Every number that enters the clock, checked where it enters (issue 21 §1).

A calibration's numbers become modelled seconds, and those end up in summary tables and
figures: a negative latency, a zero bandwidth or a NaN step time would not fail anywhere later,
it would print a wrong number. So each number is checked at load for its type (a real number,
not a bool or a string), finiteness and physical range, and a bad one is refused with one line
naming the file and the field (`network.levels.inter.bandwidth_Bps`).

The same rules serve the command-line flags (`positive_float` etc. are argparse types) and the
documents a calibration is built from (`check_calibration` runs before anything is written).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


class CalibrationError(ValueError):
    """A calibration (file, flag or part) that cannot be used; the message names where."""


# --- one number ----------------------------------------------------------------------------------
RANGES = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1}


def number(value, where: str, rng: str, integer: bool = False) -> float:
    """`value` as a float (or int), or CalibrationError naming `where` and what it must be."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (integer and not float(value).is_integer()):
        raise CalibrationError(f"{where} must be {kind} {rng}, not {json.dumps(value)}")
    if not math.isfinite(value) or not RANGES[rng](value):
        raise CalibrationError(f"{where} must be {kind} {rng}, not {value!r}")
    return int(value) if integer else float(value)


def _flag_type(rng: str, integer: bool = False):
    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {'an integer' if integer else 'a number'} {rng}, not {text!r}") from None
        try:
            return number(value, "value", rng, integer)
        except CalibrationError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value ")) from None
    parse.__name__ = f"number {rng}"
    return parse


positive_float = _flag_type("> 0")
nonnegative_float = _flag_type(">= 0")
nonnegative_int = _flag_type(">= 0", integer=True)


# --- one calibration document ---------------------------------------------------------------------
def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise CalibrationError(f"{where} must be a JSON object, not {type(value).__name__}")
    return value


def check_compute(comp, where: str) -> None:
    """The compute part: one worker's seconds per local step (> 0), per rank when measured so."""
    comp = _object(comp, where)
    if comp.get("seconds_per_step") is not None:
        number(comp["seconds_per_step"], f"{where}.seconds_per_step", "> 0")
    per_rank = comp.get("per_rank_seconds_per_step")
    if per_rank is not None:
        if not isinstance(per_rank, list):
            raise CalibrationError(f"{where}.per_rank_seconds_per_step must be a list of numbers")
        for i, v in enumerate(per_rank):
            number(v, f"{where}.per_rank_seconds_per_step[{i}]", "> 0")
    if comp.get("codecs") is not None:
        from prsgd.clock import codecs      # it imports this module
        codecs.check(comp["codecs"], f"{where}.codecs")


def check_network(net, where: str) -> None:
    """The network part: ranks per node (>= 1), the per-collective overhead and cycle time
    (>= 0), and per level a ring step latency alpha (>= 0) and a bus bandwidth (> 0)."""
    net = _object(net, where)
    if "ranks_per_node" in net:
        number(net["ranks_per_node"], f"{where}.ranks_per_node", ">= 1", integer=True)
    for key in ("overhead_s", "cycle_time_ms"):
        if key in net:
            number(net[key], f"{where}.{key}", ">= 0")
    for level, d in _object(net.get("levels") or {}, f"{where}.levels").items():
        at = f"{where}.levels.{level}"
        _check_fit(_object(d, at), at)
        for name, f in _object(d.get("collectives") or {}, f"{at}.collectives").items():
            _check_fit(_object(f, f"{at}.collectives.{name}"), f"{at}.collectives.{name}")


def _check_fit(d: dict, at: str) -> None:
    """One fitted link: alpha (>= 0) and bandwidth (> 0), or the failed fit's error."""
    if "error" in d and "bandwidth_Bps" not in d:     # calibrate-network's failed fit
        raise CalibrationError(f"{at} has no fit ({d['error']})")
    for key, rng in (("alpha_s", ">= 0"), ("bandwidth_Bps", "> 0")):
        if key not in d:
            raise CalibrationError(f"{at}.{key} is missing (a number {rng})")
        number(d[key], f"{at}.{key}", rng)


def check_calibration(doc, source: str, kind: str) -> dict:
    """A whole calibration document; `source` (the file, or what it was built from) prefixes
    every message."""
    if not isinstance(doc, dict):
        raise CalibrationError(f"{source}: not a clock calibration (a JSON "
                               f"{type(doc).__name__}, not an object)")
    if doc.get("kind") != kind:
        raise CalibrationError(f"{source}: not a clock calibration (kind must be {kind!r})")
    try:
        if doc.get("compute") is not None:
            check_compute(doc["compute"], "compute")
        if doc.get("network") is not None:
            check_network(doc["network"], "network")
    except CalibrationError as e:
        raise CalibrationError(f"{source}: {e}") from None
    return doc


def read_document(path) -> dict:
    """A JSON file as a dict, or one line saying why not (missing, unreadable, not JSON, not an
    object). A bare NaN/Infinity (which Python's json reads) is left to the field checks, which
    refuse it naming the field."""
    path = Path(path)
    if path.is_dir():
        raise CalibrationError(f"{path}: is a directory, not a calibration JSON file")
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise CalibrationError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:       # JSONDecodeError, UnicodeDecodeError
        raise CalibrationError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: a JSON {type(doc).__name__}, not an object")
    return doc


def dumps(doc: dict) -> str:
    """A calibration as JSON text; never a bare NaN/Infinity (ValueError instead)."""
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
