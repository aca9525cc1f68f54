"""One typed configuration for every run: presets, command-line overrides, validation.

A run is fully described by a `Config`: the core fields every run has (a dataclass below), and
`cfg.algo`, the chosen algorithm's own options (its `Options` dataclass, prsgd.algorithms),
validated by the algorithm itself; a backend's own rules live on its class (prsgd.backends).
`config.json` in the run directory holds `cfg.to_dict()` (flat: the core fields and the
algorithm's options) plus provenance, and `Config.from_dict` reads it back (also the records of
runs made before the options had a section of their own), so a run can be re-created or resumed
from its own directory. Every field has a command-line flag of the same name (`--batch-size` for
`batch_size`, `--outer-lr` for `cfg.algo.outer_lr`); `--preset` picks the starting values and
flags override them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field, fields

from prsgd.algorithms import REGISTRY as _ALGORITHM_REGISTRY, algorithm_class, all_options
from prsgd.algorithms.base import AlgorithmOptions
from prsgd.backends import BACKENDS as _BACKEND_REGISTRY, backend_class, packing_backend
from prsgd.compress import REGISTRY as COMPRESSORS
from prsgd.core.errors import ConfigError  # noqa: F401  (re-exported: config.ConfigError)
from prsgd.core.paths import broken_link

DATASETS = ("synthetic", "cifar10", "imagefolder", "synthetic_logreg")
MODELS = ("resnet20", "logreg")  # logreg: Stich's convex experiment (stich.py)
PRECISIONS = ("fp32", "bf16", "fp64")  # fp64: for exact-equivalence tests
DEVICES = ("auto", "cpu", "cuda")
# The data's generators are seeded with (seed * 1_000_003 + epoch) * 4099 + worker, which must fit
# in 64 bits (torch.Generator.manual_seed): hence the bounds on --seed and --epochs.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10**6
# Largest finite value of each precision: an lr or weight decay beyond it is inf in the step.
PRECISION_MAX = {"fp32": 3.4028234663852886e38, "bf16": 3.3895313892515355e38,
                 "fp64": 1.7976931348623157e308}
TOPK_RATIO = 0.01   # --topk-ratio's default (a value given without --compressor topk is refused)
NAME_MAX = 255                  # bytes in one path component on Linux/macOS file systems

# --help groups, in order (each core field names its group; algorithm options have one per
# algorithm).
DATA, OPTIM, ALGO, BACKEND, RECORDS = ("data", "model and optimisation", "algorithm", "backend",
                                       "run records")


def compressors() -> tuple[str, ...]:
    return tuple(COMPRESSORS)


def algorithms() -> tuple[str, ...]:
    return tuple(_ALGORITHM_REGISTRY)


def backends() -> tuple[str, ...]:
    return tuple(_BACKEND_REGISTRY)


class RunFinished(Exception):
    """--resume of a run that already finished (done or diverged): nothing is trained and no
    record is touched. `exit_code`: 0 for done, 3 (as when it diverged) for diverged."""

    def __init__(self, message: str, exit_code: int = 0):
        super().__init__(message)
        self.exit_code = exit_code


def _f(default, group: str, help: str, choices=None):
    """A core field with its --help line, group and (for names) its choices (a callable: the
    registries are read when asked)."""
    return field(default=default, metadata={"group": group, "help": help, "choices": choices})


def check_lr(name: str, value, precision: str, shown=None) -> None:
    """A learning-rate-like value: finite (checked with the types), > 0, and representable in the
    run's precision (beyond its largest finite value the step computes inf)."""
    flag, shown = "--" + name.replace("_", "-"), value if shown is None else shown
    if not value > 0:
        raise ConfigError(f"{flag}: must be > 0 (got {shown!r})")
    top = PRECISION_MAX.get(precision, PRECISION_MAX["fp32"])
    if abs(value) > top:
        raise ConfigError(f"{flag}: overflows {precision} (largest finite value {top:.4g}) "
                          f"(got {shown!r})")


@dataclass
class Config:
    """The core fields every run has; `algo` holds the chosen algorithm's own options."""
    # --- what to run -------------------------------------------------------------------------
    preset: str = _f("paper", OPTIM, "starting values of every field; flags override them",
                     lambda: tuple(PRESETS))
    algorithm: str = _f("prsgd", ALGO, "prsgd: Algorithm 1 (PR-SGD); kavg: the same as K-AVG; "
                        "varying: Algorithm 2; hetero: Algorithm 3; the others: baselines",
                        algorithms)
    interval: int = _f(1, ALGO, "I: local steps between two averaging rounds (K of K-AVG, K1 "
                       "of Hier-AVG)")
    intervals: tuple[int, ...] = _f((), ALGO, "packed backend: one run per I, all packed in one "
                                    "process (e.g. 1,4,8)")
    workers: int = _f(0, BACKEND, "N workers; 0 = the launcher's world size (required by the "
                      "packed backend)")
    backend: str = _f("horovod", BACKEND, "horovod (horovodrun/mpirun ranks), torchdist "
                      "(torchrun ranks), packed (N replicas in one process)", backends)
    model: str = _f("resnet20", OPTIM, "resnet20 (images) or logreg (with --dataset "
                    "synthetic_logreg)", lambda: MODELS)
    # --- optimisation (paper, Section 5) -----------------------------------------------------
    batch_size: int = _f(32, OPTIM, "local mini-batch size PER WORKER (the global batch is N "
                         "times it)")
    lr: float = _f(0.1, OPTIM, "learning rate of the local SGD steps")
    momentum: float = _f(0.9, OPTIM, "local SGD momentum, in [0, 1)")
    weight_decay: float = _f(1e-4, OPTIM, "L2 weight decay (not stated in the paper: our "
                             "assumption)")
    lr_milestones: tuple[int, ...] = _f((150, 275), OPTIM, "global epochs at which lr is "
                                        "multiplied by --lr-gamma")
    lr_gamma: float = _f(0.1, OPTIM, "lr decay factor at each milestone")
    lr_decay_shift: float = _f(0.0, OPTIM, "a > 0: lr x a/(a+t-1) at local step t (Stich's "
                               "decay); 0 = off")
    epochs: int = _f(300, OPTIM, "global epochs: all workers together pass once over the data")
    average_momentum: bool = _f(False, ALGO, "also average the momentum buffers in each round")
    compressor: str = _f("none", ALGO, "what a round sends: none (the models: Algorithm 1); "
                         "fp16, bf16 (each worker's change since the last average, cast: one "
                         "low-precision allreduce); int8 (a scale per 1,024 values) or topk "
                         "(--topk-ratio of the values + indices), allgathered. BN statistics "
                         "stay exact. With --overlap-delay the round is started asynchronously "
                         "and applied TAU steps later", compressors)
    topk_ratio: float = _f(TOPK_RATIO, ALGO, "--compressor topk: the fraction of each worker's "
                           "values a round sends, in (0, 1]")
    error_feedback: bool = _f(True, ALGO, "lossy compressors: each worker keeps what a round did "
                              "not send and adds it to its next round (false: drop it)")
    max_steps: int = _f(0, OPTIM, "stop after this many local steps (0 = run all epochs)")
    slowdown: tuple[float, ...] = _f((), BACKEND, "simulated slowness per worker, >= 1 (2 = half "
                                     "speed); process backends only")
    # --- data ---------------------------------------------------------------------------------
    dataset: str = _f("cifar10", DATA, "what to train on", lambda: DATASETS)
    data: str = _f("", DATA, "path: a cifar-10-batches-py folder, an ImageFolder tree or a .zip")
    train_subset: int = _f(0, DATA, "use a fixed random subset of n training images (0 = all)")
    test_subset: int = _f(0, DATA, "use a fixed random subset of n test images (0 = all)")
    augment: bool = _f(True, DATA, "random crop + horizontal flip of training images")
    seed: int = _f(0, DATA, "seeds the initial weights and every worker's batches")
    # --- evaluation and logging -------------------------------------------------------------
    eval_every: int = _f(1, RECORDS, "evaluate the averaged model every k epochs (0 = never)")
    eval_train_loss: bool = _f(False, RECORDS, "also the full-training-set loss of the averaged "
                               "model")
    diagnostics: bool = _f(False, RECORDS, "record consensus distance and gradient moments "
                           "(diagnostics.csv)")
    out: str = _f("runs", RECORDS, "parent folder of run directories (or the run directory "
                  "itself)")
    run_id: str = _f("", RECORDS, "the run directory's name inside --out (generated when "
                     "empty)")
    # --- execution ----------------------------------------------------------------------------
    device: str = _f("auto", BACKEND, "where workers train (auto: cuda if available)",
                     lambda: DEVICES)
    precision: str = _f("fp32", OPTIM, "number format of the model and the step (fp64: exact "
                        "equivalence tests)", lambda: PRECISIONS)
    cuda_graph: bool = _f(False, BACKEND, "capture the step (and packed rounds) as CUDA graphs")
    channels_last: bool = _f(False, BACKEND, "channels-last memory layout on CUDA")
    resume: bool = _f(False, RECORDS, "continue the run in --out/--run-id from its checkpoint")
    restart: bool = _f(False, RECORDS, "discard the run in --out/--run-id and start again")
    checkpoint_every: int = _f(1, RECORDS, "epochs between checkpoints (0 = never)")
    deterministic: bool = _f(True, BACKEND, "deterministic kernels (same numbers on every run)")
    progress: bool = _f(True, RECORDS, "print a line per epoch")
    # --- the chosen algorithm's own options (prsgd.algorithms: its `Options`) -----------------
    algo: AlgorithmOptions = field(default=None, metadata={"group": None})

    def __post_init__(self):
        if self.algo is None and self.algorithm in _ALGORITHM_REGISTRY:
            self.algo = algorithm_class(self.algorithm).Options()

    @classmethod
    def create(cls, **flat) -> "Config":
        """A Config from flat field names (core fields and algorithm options together, as on
        the command line and in config.json); an option of another algorithm than the chosen
        one is refused, naming its flag."""
        core_names = {f.name for f in fields(cls)} - {"algo"}
        core = {k: v for k, v in flat.items() if k in core_names}
        opts = {k: v for k, v in flat.items() if k not in core_names}
        cfg = cls(**core)
        cfg.algo = options_for(cfg.algorithm, opts)
        return cfg

    # ------------------------------------------------------------------------------------------
    def validate(self, world_size: int | None = None) -> "Config":
        """Raise ConfigError naming the first bad field. `world_size`: the launcher's, if any."""
        self._validate_choices()
        self._validate_types()
        self._validate_numbers()
        self._validate_run_id()
        self._validate_combinations()
        self._validate_compression()
        n = self.num_workers(world_size)
        if n <= 0:
            self._bad("workers", f"the {self.backend} backend needs --workers N (N >= 1)")
        if self.slowdown and len(self.slowdown) != n:
            self._bad("slowdown", f"needs one value per worker ({n})")
        backend_class(self.backend).validate_config(self, world_size)
        algorithm_class(self.algorithm).check(self, n)
        self.check_out()
        return self

    def _bad(self, name: str, why: str):
        raise ConfigError(f"--{name.replace('_', '-')}: {why} (got {getattr(self, name)!r})")

    def _validate_choices(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices():
                self._bad(f.name, f"must be one of {', '.join(choices())}")
        if type(self.algo) is not algorithm_class(self.algorithm).Options:
            raise ConfigError(f"--algorithm: the options given are not {self.algorithm}'s "
                              f"(got {type(self.algo).__qualname__})")

    def _validate_types(self) -> None:
        """Every field of its declared type; every number finite (nan/inf refused)."""
        for obj in (self, self.algo):
            hints = typing.get_type_hints(type(obj))
            for f in fields(obj):
                if f.name != "algo":
                    _check_type(f.name, hints[f.name], getattr(obj, f.name))

    def _validate_numbers(self) -> None:
        bad = self._bad
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
        check_lr("lr", self.lr, self.precision)
        top = PRECISION_MAX.get(self.precision, PRECISION_MAX["fp32"])
        if abs(self.weight_decay) > top:
            bad("weight_decay", f"overflows {self.precision} (largest finite value {top:.4g})")
        if self.lr_gamma <= 0:
            bad("lr_gamma", "the lr decay factor must be > 0")
        if not 0 <= self.seed <= MAX_SEED:
            bad("seed", f"must be in 0..{MAX_SEED} (it seeds 64-bit data generators)")
        if self.epochs > MAX_EPOCHS:
            bad("epochs", f"must be at most {MAX_EPOCHS}")
        if any(m <= 0 for m in self.lr_milestones):
            bad("lr_milestones", "every milestone must be a positive epoch")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if self.weight_decay < 0:
            bad("weight_decay", "must be >= 0")
        if self.lr_decay_shift < 0:
            bad("lr_decay_shift", "must be >= 0 (0 = off)")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            bad("lr_milestones", "must be strictly increasing (each epoch once)")
        if any(s < 1 for s in self.slowdown):
            bad("slowdown", "every factor must be >= 1 (1 = full speed, 2 = half speed)")

    def _validate_combinations(self) -> None:
        bad = self._bad
        if (self.model == "logreg") != (self.dataset == "synthetic_logreg"):
            bad("model", "--model logreg goes with --dataset synthetic_logreg (features), "
                "--model resnet20 with an image dataset")
        if len(set(self.intervals)) != len(self.intervals):
            bad("intervals", "each interval once (a duplicate would train two runs into one "
                "directory)")
        if self.intervals and not backend_class(self.backend).holds_all_workers:
            bad("intervals", f"packs several runs into one process: needs --backend "
                f"{packing_backend()}")
        if self.intervals and not algorithm_class(self.algorithm).packable:
            packable = "|".join(a for a in algorithms() if algorithm_class(a).packable)
            bad("intervals", f"packing several intervals supports --algorithm {packable} only")
        if self.dataset in ("imagefolder",) and not self.data:
            bad("data", "--dataset imagefolder needs --data PATH (a folder or a .zip)")
        if self.resume and self.restart:
            bad("restart", "--resume and --restart exclude each other")

    def _validate_compression(self) -> None:
        """--compressor compresses rounds that average every worker's whole model from a
        reference (algorithms/compressed.py); what it cannot run is refused here."""
        bad = self._bad
        if not 0 < self.topk_ratio <= 1:
            bad("topk_ratio", "must be in (0, 1]")
        if self.compressor != "topk" and self.topk_ratio != TOPK_RATIO:
            bad("topk_ratio", f"applies only to --compressor topk, not {self.compressor}")
        if self.compressor == "none":
            return
        if not algorithm_class(self.algorithm).compressible:
            ok = "|".join(a for a in algorithms() if algorithm_class(a).compressible)
            bad("compressor", f"compresses the model averages of --algorithm {ok} only, not "
                f"--algorithm {self.algorithm}")
        if self.average_momentum:
            bad("average_momentum", "not with --compressor: a compressed round sends parameter "
                "deltas (and exact BN statistics), no momentum")
        if self.cuda_graph:
            bad("cuda_graph", "not with --compressor: the captured round is the plain average")
        if self.diagnostics:
            bad("diagnostics", "not with --compressor: the consensus distance rides on the plain "
                "average's collective")

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

    def num_workers(self, world_size: int | None = None) -> int:
        """N of the run (the backend says: the launcher's world, or --workers)."""
        return backend_class(self.backend).run_workers(self, world_size)

    def to_dict(self) -> dict:
        """Flat: the core fields and the algorithm's options (config.json's `config`)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "algo"}
        d.update(dataclasses.asdict(self.algo) if self.algo is not None else {})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A Config from config.json's `config`. Records made before the options had sections
        hold every algorithm's options: another algorithm's, at its default, is dropped."""
        known = {f.name for f in fields(cls)} - {"algo"} | set(option_defaults())
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        algorithm = kw.get("algorithm", "prsgd")
        own = ({o.name for o in algorithm_class(algorithm).options()}
               if algorithm in _ALGORITHM_REGISTRY else set())
        defaults = option_defaults()
        kw = {k: v for k, v in kw.items() if k in own or k not in defaults or v != defaults[k]}
        return cls.create(**kw)


def _check_type(name: str, t, v) -> None:
    flag = "--" + name.replace("_", "-")
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


def option_defaults() -> dict:
    """Every algorithm option's default, by name."""
    return {opt.name: opt.default for opt, _ in all_options()}


def options_for(algorithm: str, given: dict) -> AlgorithmOptions | None:
    """The options section of `algorithm` with the `given` values; a value for another
    algorithm's option is refused naming its flag."""
    owners = {opt.name: names for opt, names in all_options()}
    if algorithm not in _ALGORITHM_REGISTRY:
        raise ConfigError(f"--algorithm: must be one of {', '.join(algorithms())} "
                          f"(got {algorithm!r})")
    cls = algorithm_class(algorithm)
    own = {o.name for o in cls.options()}
    for name in given:
        if name not in own:
            if name not in owners:
                raise ConfigError(f"unknown config field: {name}")
            raise ConfigError(f"--{name.replace('_', '-')}: applies only to --algorithm "
                              f"{' or '.join(owners[name])} (got --algorithm {algorithm})")
    return cls.Options(**given)


# Resume compares the WHOLE resolved config (config.json's flat dict). These fields may change on
# --resume (they change neither the mathematics nor what the run records); each change is logged
# in config.json's `resumes`. `out` and `data` may be spelled differently for the same directory
# (the dataset itself is compared by its sha256).
OPERATIONAL_FIELDS = frozenset({"progress", "checkpoint_every", "out", "data"})
# Fields that say what to do with the directory, not what the run is: never compared.
COMMAND_FIELDS = frozenset({"resume", "restart", "run_id"})


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def resume_differences(old: dict, new: dict) -> tuple[list[str], dict]:
    """(refusals, operational changes) between the config a run was made with and the one it is
    resumed with (both flat, as in config.json). Refusals: '--flag: OLD in the run, NEW now' for
    every other differing field (a field missing from one record is compared as its default: a
    record made before the options had sections holds every algorithm's options, one made
    after only its own); operational changes: field -> [old, new]."""
    defaults = {f.name: _plain(f.default) for f in fields(Config) if f.name != "algo"}
    defaults.update({k: _plain(v) for k, v in option_defaults().items()})
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
    """The preset's values with `overrides` (flat field names, options included)."""
    if name not in PRESETS:
        raise ConfigError(f"--preset: must be one of {', '.join(PRESETS)} (got {name!r})")
    return Config.create(preset=name, **{**PRESETS[name], **overrides})


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
    """Every field as a flag, grouped, each with a one-line help, its default and its choices.
    Defaults are None on the parser itself so that the flags a command line gives are known."""
    # allow_abbrev=False: `--see 3` is not `--seed 3`; a flag means exactly what it says, so the
    # sweep can tell which flags a command line sets.
    cls = _RaisingParser if raise_errors else argparse.ArgumentParser
    p = cls(prog=prog, allow_abbrev=False,
            description="Train one run: N workers take local SGD steps and average their "
                        "models every I steps (Parallel Restarted SGD and its family).",
            epilog="Defaults are the paper preset's; --preset demo|smoke change some "
                   "(shown as 'smoke: ...').")
    groups = {g: p.add_argument_group(g) for g in (DATA, OPTIM, ALGO, BACKEND, RECORDS)}
    hints = typing.get_type_hints(Config)
    for f in fields(Config):
        if f.name == "algo":
            continue
        _add_flag(groups[f.metadata["group"]], f.name, hints[f.name], f.default,
                  f.metadata["help"], f.metadata.get("choices"))
    # The spelling issue 19 asked for, next to the project's `--error-feedback false`.
    groups[ALGO].add_argument("--no-error-feedback", dest="error_feedback", action="store_const",
                              const=False, default=None,
                              help="the same as --error-feedback false (default: feedback on)")
    by_owners: dict[tuple, list] = {}   # each option once, grouped by the algorithms owning it
    for opt, owners in all_options():
        by_owners.setdefault(owners, []).append(opt)
    for owners, opts in by_owners.items():
        g = p.add_argument_group(f"options of --algorithm {' / '.join(owners)}")
        for opt in opts:
            _add_flag(g, opt.name, opt.type, opt.default, f"[{'/'.join(owners)}] {opt.help}")
    return p


def _add_flag(group, name: str, t, default, help: str, choices=None) -> None:
    flag = "--" + name.replace("_", "-")
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    changed = [f"{p}: {_shown(v[name])}" for p, v in PRESETS.items() if name in v]
    text = f"{help} (default: {'none' if shown == '' else shown}"
    text += f"; {', '.join(changed)})" if changed else ")"
    if t is bool:
        group.add_argument(flag, nargs="?", const=True, default=None, type=_parse_bool,
                           metavar="BOOL", help=text + ". Bare flag = true")
    elif typing.get_origin(t) is tuple:
        inner = typing.get_args(t)[0]
        group.add_argument(flag, default=None, type=_parse_tuple(inner), metavar="A,B,...",
                           help=text)
    else:   # choices are shown, and checked by validate (one message style for every value)
        group.add_argument(flag, default="paper" if name == "preset" else None,
                           type=_strict_int if t is int else t, help=text,
                           metavar=("{" + ",".join(choices()) + "}") if choices else None)


def _shown(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


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
