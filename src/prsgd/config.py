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
import typing
from dataclasses import dataclass, field, fields

# Every algorithm and its own options, validation and label: prsgd.algorithms (one module each).
from .algorithms import REGISTRY as _ALGORITHM_REGISTRY, algorithm_class, all_options  # noqa: E402
from .errors import ConfigError  # noqa: E402,F401  (re-exported: config.ConfigError)

ALGORITHMS = tuple(_ALGORITHM_REGISTRY)
DATASETS = ("synthetic", "cifar10", "imagefolder", "synthetic_logreg")
MODELS = ("resnet20", "logreg")  # logreg: Stich's convex experiment (stich.py)
BACKENDS = ("horovod", "packed", "torchdist")
PRECISIONS = ("fp32", "bf16", "fp64")  # fp64: for exact-equivalence tests
DEVICES = ("auto", "cpu", "cuda")


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
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if self.weight_decay < 0:
            bad("weight_decay", "must be >= 0")
        if self.lr_decay_shift < 0:
            bad("lr_decay_shift", "must be >= 0 (0 = off)")
        if (self.model == "logreg") != (self.dataset == "synthetic_logreg"):
            bad("model", "--model logreg goes with --dataset synthetic_logreg (features), "
                "--model resnet20 with an image dataset")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            bad("lr_milestones", "must be increasing")
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
        return self

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


def build_parser(prog: str = "python -m prsgd.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
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


def from_args(argv: list[str] | None = None) -> Config:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "preset"}
    return preset(args.preset, **overrides)


def dumps(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
