"""One typed configuration for every run: presets, command-line overrides, validation.

A run is fully described by a `Config`. `config.json` in the run directory holds `asdict(cfg)`
plus provenance, and `Config.from_dict` reads it back, so a run can be re-created or resumed from
its own directory. Every field has a command-line flag of the same name (`--batch-size` for
`batch_size`); `--preset` picks the starting values and flags override them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field, fields

# Every algorithm and its own options, validation and label: prsgd.algorithms (one module each).
from prsgd.algorithms import REGISTRY as _ALGORITHM_REGISTRY, algorithm_class, all_options  # noqa: E402
from prsgd.core.errors import ConfigError  # noqa: E402,F401  (re-exported: config.ConfigError)
from prsgd.core.paths import broken_link  # noqa: E402

ALGORITHMS = tuple(_ALGORITHM_REGISTRY)
DATASETS = ("synthetic", "cifar10", "imagefolder", "synthetic_logreg")
MODELS = ("resnet20", "logreg")  # logreg: Stich's convex experiment (stich.py)
BACKENDS = ("horovod", "packed", "torchdist")
PRECISIONS = ("fp32", "bf16", "fp64")  # fp64: for exact-equivalence tests
DEVICES = ("auto", "cpu", "cuda")
# The data's generators are seeded with (seed * 1_000_003 + epoch) * 4099 + worker, which must fit
# in 64 bits (torch.Generator.manual_seed): hence the bounds on --seed and --epochs.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10**6
# Largest finite value of each precision: an lr or weight decay beyond it is inf in the step.
PRECISION_MAX = {"fp32": 3.4028234663852886e38, "bf16": 3.3895313892515355e38,
                 "fp64": 1.7976931348623157e308}
NAME_MAX = 255                  # bytes in one path component on Linux/macOS file systems


class RunFinished(Exception):
    """--resume of a run that already finished (done or diverged): nothing is trained and no
    record is touched. `exit_code`: 0 for done, 3 (as when it diverged) for diverged."""

    def __init__(self, message: str, exit_code: int = 0):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class CoreConfig:
    """The fields every run has; `Config` adds each algorithm's own options (see below)."""
    # --- what to run -------------------------------------------------------------------------
    preset: str = "paper"
    algorithm: str = "prsgd"        # prsgd (Algorithm 1), kavg (alias of prsgd), ... see ALGORITHMS
    interval: int = 1               # I: local steps between two averaging rounds
    intervals: tuple[int, ...] = () # packed backend: one run per I, all packed in one process
    workers: int = 0                # N; 0 = the launcher's world size (horovod) / required (packed)
    backend: str = "horovod"
    model: str = "resnet20"         # resnet20 (images) or logreg (features: --dataset synthetic_logreg)
    # --- optimisation (paper, Section 5) -----------------------------------------------------
    batch_size: int = 32            # local mini-batch per worker
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4      # not stated in the paper: our assumption, recorded as such
    lr_milestones: tuple[int, ...] = (150, 275)   # global epochs at which lr is divided
    lr_gamma: float = 0.1
    lr_decay_shift: float = 0.0     # a > 0: lr * a / (a + t - 1) at local step t (Stich's decay)
    epochs: int = 300               # global epochs: all workers together pass once over the data
    average_momentum: bool = False  # also average the momentum buffers in each round
    max_steps: int = 0              # stop after this many local steps (0 = run all epochs)
    # --- execution of the family (the algorithms' own options are added to Config below) -----
    slowdown: tuple[float, ...] = ()      # simulated slowness per worker (1.0 = normal speed)
    # --- data ---------------------------------------------------------------------------------
    dataset: str = "cifar10"
    data: str = ""                  # path: cifar-10-batches-py dir, ImageFolder dir or zip
    train_subset: int = 0           # use only n training images, a fixed random subset (0 = all)
    test_subset: int = 0
    augment: bool = True
    seed: int = 0
    # --- evaluation and logging -------------------------------------------------------------
    eval_every: int = 1             # evaluate the averaged model every k epochs (0 = never)
    eval_train_loss: bool = False   # also the full-training-set loss of the averaged model
    diagnostics: bool = False       # consensus distance and gradient moments (issue: theory)
    out: str = "runs"               # parent folder of run directories (or the run dir itself)
    run_id: str = ""                # short id; generated when empty
    # --- execution ----------------------------------------------------------------------------
    device: str = "auto"
    precision: str = "fp32"
    cuda_graph: bool = False
    channels_last: bool = False
    resume: bool = False
    restart: bool = False
    checkpoint_every: int = 1       # epochs between checkpoints (0 = never)
    deterministic: bool = True
    progress: bool = True

    # ------------------------------------------------------------------------------------------
    def validate(self, world_size: int | None = None) -> "Config":
        """Raise ConfigError naming the first bad field. `world_size`: the launcher's, if any."""
        def bad(name: str, why: str):
            raise ConfigError(f"--{name.replace('_', '-')}: {why} (got {getattr(self, name)!r})")

        self._validate_types()
        for name, allowed in (("algorithm", ALGORITHMS), ("dataset", DATASETS),
                              ("backend", BACKENDS), ("precision", PRECISIONS),
                              ("device", DEVICES), ("model", MODELS)):
            if getattr(self, name) not in allowed:
                bad(name, f"must be one of {', '.join(allowed)}")
        if any(not isinstance(k, int) or k <= 0 for k in self.intervals):
            bad("intervals", "every I must be a positive integer")
        for name in ("interval", "batch_size", "epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                bad(name, "must be a positive integer")
        for name in ("max_steps", "train_subset", "test_subset", "eval_every", "workers",
                     "checkpoint_every"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if self.lr <= 0:
            bad("lr", "must be > 0")
        top = PRECISION_MAX.get(self.precision, PRECISION_MAX["fp32"])
        for name in ("lr", "weight_decay"):
            if abs(getattr(self, name)) > top:
                bad(name, f"overflows {self.precision} (largest finite value {top:.4g})")
        if self.lr_gamma <= 0:
            bad("lr_gamma", "the lr decay factor must be > 0")
        if any(v <= 0 for v in self.epoch_lrs):
            bad("epoch_lrs", "every lr must be > 0")
        if not 0 <= self.seed <= MAX_SEED:
            bad("seed", f"must be in 0..{MAX_SEED} (it seeds 64-bit data generators)")
        if self.epochs > MAX_EPOCHS:
            bad("epochs", f"must be at most {MAX_EPOCHS}")
        if any(m <= 0 for m in self.lr_milestones):
            bad("lr_milestones", "every milestone must be a positive epoch")
        self._validate_run_id()
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if self.weight_decay < 0:
            bad("weight_decay", "must be >= 0")
        if self.lr_decay_shift < 0:
            bad("lr_decay_shift", "must be >= 0 (0 = off)")
        if (self.model == "logreg") != (self.dataset == "synthetic_logreg"):
            bad("model", "--model logreg goes with --dataset synthetic_logreg (features), "
                "--model resnet20 with an image dataset")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            bad("lr_milestones", "must be strictly increasing (each epoch once)")
        if len(set(self.intervals)) != len(self.intervals):
            bad("intervals", "each interval once (a duplicate would train two runs into one "
                "directory)")
        if self.intervals and self.backend != "packed":
            bad("intervals", "packs several runs into one process: needs --backend packed")
        algorithm = algorithm_class(self.algorithm)
        if self.intervals and not algorithm.packable:
            packable = "|".join(a for a in ALGORITHMS if algorithm_class(a).packable)
            bad("intervals", f"packing several intervals supports --algorithm {packable} only")
        if any(s < 1 for s in self.slowdown):
            bad("slowdown", "every factor must be >= 1 (1 = full speed, 2 = half speed)")
        if self.dataset in ("imagefolder",) and not self.data:
            bad("data", "--dataset imagefolder needs --data PATH (a folder or a .zip)")
        if self.resume and self.restart:
            bad("restart", "--resume and --restart exclude each other")
        if world_size is not None and self.backend != "packed":
            if self.workers and self.workers != world_size:
                bad("workers", f"does not match the launcher's {world_size} ranks")
        n = self.num_workers(world_size)
        if n <= 0:
            bad("workers", "the packed backend needs --workers N (N >= 1)")
        if self.slowdown and len(self.slowdown) != n:
            bad("slowdown", f"needs one value per worker ({n})")
        self._validate_algorithm(algorithm, n)
        self.check_out()
        return self

    def _validate_types(self) -> None:
        """Every field of its declared type; every number finite (nan/inf refused)."""
        hints = typing.get_type_hints(Config)
        for f in fields(self):
            t, v, flag = hints[f.name], getattr(self, f.name), "--" + f.name.replace("_", "-")
            inner = typing.get_args(t)[0] if typing.get_origin(t) is tuple else None
            values = v if inner is not None and isinstance(v, tuple) else (v,)
            want = inner or t
            if inner is not None and not isinstance(v, tuple):
                raise ConfigError(f"{flag}: expected a list of {want.__name__} (got {v!r})")
            for x in values:
                if want is float and isinstance(x, int) and not isinstance(x, bool):
                    continue
                if not isinstance(x, want) or (want is int and isinstance(x, bool)):
                    raise ConfigError(f"{flag}: expected {want.__name__} (got {x!r})")
                if want is float and not math.isfinite(x):
                    raise ConfigError(f"{flag}: must be a finite number (got {x!r})")

    def _validate_run_id(self) -> None:
        """A run id names ONE directory inside --out: no separators, no '..', not absolute, and
        short enough for the file system (packed runs append '-I<interval>')."""
        rid = self.run_id
        if not rid:
            return
        if rid in (".", "..") or "/" in rid or os.sep in rid or "\0" in rid:
            raise ConfigError(f"--run-id: must be one directory name inside --out, without '/' "
                              f"or '..' (got {rid!r})")
        longest = len(rid.encode()) + (len(f"-I{max(self.intervals)}") if self.intervals else 0)
        if longest > NAME_MAX:
            raise ConfigError(f"--run-id: {longest} bytes, longer than a file name may be "
                              f"({NAME_MAX} bytes)")

    def check_out(self) -> None:
        """--out must be (or become) a writable directory: refused before anything is written."""
        path = os.path.abspath(self.out or ".")
        probe = path
        while not os.path.lexists(probe):
            probe = os.path.dirname(probe)
        from prsgd.core.build import packed_run_id     # (build imports this module)
        run_dirs = [self.run_id] + [packed_run_id(self.run_id, i) for i in self.intervals or ()] \
            if self.run_id else []
        for broken in filter(None, map(broken_link, [probe, *(os.path.join(self.out or ".", d)
                                                               for d in run_dirs)])):
            raise ConfigError(f"--out/--run-id: {broken}")
        if not os.path.isdir(probe):
            raise ConfigError(f"--out: {probe} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(f"--out: {probe} is not writable (read-only or no permission)")

    def _validate_algorithm(self, algorithm, n: int):
        # Which options belong to which algorithm: a flag that the chosen algorithm would ignore is
        # refused, so that a sweep cannot silently run something other than what it names.
        for opt, owners in all_options():
            if getattr(self, opt.name) != opt.default and self.algorithm not in owners:
                raise ConfigError(
                    f"--{opt.name.replace('_', '-')}: applies only to --algorithm "
                    f"{' or '.join(owners)} (got --algorithm {self.algorithm})")
        algorithm.validate(self, n)
        if hasattr(algorithm, "validate_combination"):
            algorithm.validate_combination(self)
        if self.backend == "packed":
            if self.slowdown:
                raise ConfigError("--slowdown: needs the horovod backend (packed replicas "
                                  "share one process)")

    def num_workers(self, world_size: int | None = None) -> int:
        if self.backend != "packed":   # one worker per process: the launcher's world
            return world_size if world_size is not None else (self.workers or 1)
        return self.workers

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


def _with_algorithm_options(core: type) -> type:
    """`Config`: the core fields, then every algorithm's own options as fields (and flags)."""
    extra = [(opt.name, opt.type, field(default=opt.default)) for opt, _ in all_options()]
    cls = dataclasses.make_dataclass("Config", extra, bases=(core,))
    cls.__module__, cls.__doc__ = __name__, core.__doc__
    return cls


Config = _with_algorithm_options(CoreConfig)

# Fields that change the mathematics of a run: a checkpoint made under other values is refused.
# Every algorithm option does (they exist only to change the mathematics).
MATH_FIELDS = ("algorithm", "interval", "workers", "backend", "batch_size", "lr", "momentum",
               "weight_decay", "lr_milestones", "lr_gamma", "epochs", "average_momentum",
               "dataset", "train_subset", "augment", "seed", "precision", "intervals", "slowdown",
               "model", "lr_decay_shift", *(opt.name for opt, _ in all_options()))

# Resume compares the WHOLE resolved config. These fields may change on --resume (they change
# neither the mathematics nor what the run records); each change is logged in config.json's
# `resumes`. `out` and `data` may be spelled differently for the same directory (the dataset
# itself is compared by its sha256).
OPERATIONAL_FIELDS = frozenset({"progress", "checkpoint_every", "out", "data"})
# Fields that say what to do with the directory, not what the run is: never compared.
COMMAND_FIELDS = frozenset({"resume", "restart", "run_id"})


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def resume_differences(old: dict, new: dict) -> tuple[list[str], dict]:
    """(refusals, operational changes) between the config a run was made with and the one it is
    resumed with. Refusals: '--flag: OLD in the run, NEW now' for every other differing field
    (a field missing from the old record counts as different unless the new value is its
    default); operational changes: field -> [old, new]."""
    defaults = {f.name: _plain(f.default if f.default is not dataclasses.MISSING
                               else f.default_factory()) for f in fields(Config)}
    refused, changed = [], {}
    for k in sorted(set(old) | set(new)):
        if k in COMMAND_FIELDS:
            continue
        a, b = _plain(old.get(k, defaults.get(k))), _plain(new.get(k, defaults.get(k)))
        if a == b:
            continue
        if k in OPERATIONAL_FIELDS:
            changed[k] = [a, b]
        else:
            refused.append(f"--{k.replace('_', '-')}: {a!r} in the run, {b!r} now")
    return refused, changed


PRESETS: dict[str, dict] = {
    # The paper's Section 5: ResNet20 / CIFAR-10, 8 workers, 300 epochs.
    "paper": dict(),
    # Scaled down for a 2-core CPU: a subset of CIFAR-10, few epochs, milestones scaled with them.
    # `make demo` runs it for 5 intervals with 8 Gloo ranks in about 15 minutes (results/README).
    "demo": dict(epochs=5, lr_milestones=(4,), train_subset=4096, test_subset=1000,
                 eval_every=1),
    # Seconds per epoch on a CPU: for CI and first contact.
    "smoke": dict(epochs=3, lr_milestones=(2,), train_subset=512, test_subset=256,
                  dataset="synthetic", eval_every=1, batch_size=16),
}


def preset(name: str, **overrides) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"--preset: must be one of {', '.join(PRESETS)} (got {name!r})")
    return Config(preset=name, **{**PRESETS[name], **overrides})


# --- command line ------------------------------------------------------------------------------
def _parse_tuple(inner: type):
    def parse(text: str):
        text = text.strip()
        if text in ("", "none", "()"):
            return ()
        try:
            return tuple(inner(x) for x in text.replace(" ", "").split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {inner.__name__}")
    return parse


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


def _strict_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")


class _RaisingParser(argparse.ArgumentParser):
    """A parser whose errors are ConfigErrors (for callers that parse training arguments of
    their own, like the sweep driver) instead of a usage message and SystemExit."""

    def error(self, message):
        raise ConfigError(message)


def build_parser(prog: str = "python -m prsgd.train",
                 raise_errors: bool = False) -> argparse.ArgumentParser:
    # allow_abbrev=False: `--see 3` is not `--seed 3`; a flag means exactly what it says, so the
    # sweep can tell which flags a command line sets.
    cls = _RaisingParser if raise_errors else argparse.ArgumentParser
    p = cls(prog=prog, description=__doc__.splitlines()[0], allow_abbrev=False,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(Config)
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        t = hints[f.name]
        if f.name == "preset":
            p.add_argument(flag, default="paper", help="starting values: " + ", ".join(PRESETS))
            continue
        if t is bool:
            p.add_argument(flag, nargs="?", const=True, default=None, type=_parse_bool,
                           metavar="BOOL")
        elif typing.get_origin(t) is tuple:
            inner = typing.get_args(t)[0]
            p.add_argument(flag, default=None, type=_parse_tuple(inner), metavar="A,B,...")
        else:
            p.add_argument(flag, default=None, type=_strict_int if t is int else t)
    return p


def given_flags(argv: list[str], raise_errors: bool = True) -> dict:
    """The fields a command line sets explicitly (field name -> parsed value)."""
    args = build_parser(raise_errors=raise_errors).parse_args(argv)
    return {k: v for k, v in vars(args).items() if v is not None and k != "preset"}


def from_args(argv: list[str] | None = None) -> Config:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "preset"}
    cfg = preset(args.preset, **overrides)
    # Milestones given on the command line must fall inside the run; a preset's milestones
    # beyond a shortened run (--preset smoke --epochs 1) simply never fire.
    ms = overrides.get("lr_milestones")
    if ms and isinstance(cfg.epochs, int) and any(m > cfg.epochs for m in ms):
        raise ConfigError(f"--lr-milestones: every milestone must be an epoch of the run "
                          f"(1..{cfg.epochs}) (got {ms!r})")
    return cfg


def dumps(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, allow_nan=False)
