"""Adding an algorithm or a backend is one class + one registry line (issue 17 §2): a toy
algorithm (Algorithm 1 with its own option and label) and a toy backend (the packed one under
another name) are registered at run time, and the config (parse, validate, its --flag, config.json
round trip), the sweep's parser and commands, the plots' labels and the clock accept them with no
other edit. A tiny run of the pair trains in-process and is read back by the plots and the clock.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass

import pytest

from prsgd import train
from prsgd.algorithms import REGISTRY, AlgorithmOptions, option
from prsgd.algorithms.periodic import PRSGD
from prsgd.backends import BACKENDS
from prsgd.backends.packed import PackedComm
from prsgd.core.config import ConfigError, Config, build_parser, from_args
from prsgd.experiments.spec import job_command


# A run's provenance asks `uname -p` once per process (platform caches it): ask it at import,
# before the unit tier's no-subprocess guard is on, so this file also passes on its own.
platform.platform()


class ToyAlgorithm(PRSGD):
    """Algorithm 1 whose local learning rate is scaled by --toy-scale."""
    name = "toy"

    @dataclass
    class Options(AlgorithmOptions):
        toy_scale: float = option(1.0, "multiplies the local learning rate", lr=True)

    def lr(self, loop) -> float:
        return super().lr(loop) * self.opts.toy_scale

    @classmethod
    def label(cls, c: dict) -> str:
        return f"toy I={c['interval']} x{c['toy_scale']:g}"


class ToyBackend(PackedComm):
    """The packed backend under another name."""
    name = "toypacked"


@pytest.fixture
def toys(monkeypatch):
    # The one registry line each (as the plugin's own module would add to the registry files).
    monkeypatch.setitem(REGISTRY, "toy", f"{__name__}:ToyAlgorithm")
    monkeypatch.setitem(BACKENDS, "toypacked", f"{__name__}:ToyBackend")


TINY = ["--preset", "smoke", "--train-subset", "32", "--test-subset", "32", "--batch-size", "8",
        "--epochs", "1", "--eval-every", "1", "--progress", "false", "--device", "cpu"]
TOY = ["--algorithm", "toy", "--toy-scale", "0.5", "--interval", "2"]


def test_config_parses_validates_and_records_the_toys(toys):
    cfg = from_args([*TINY, *TOY, "--backend", "toypacked", "--workers", "2"]).validate()
    assert type(cfg.algo) is ToyAlgorithm.Options and cfg.algo.toy_scale == 0.5
    assert cfg.num_workers() == 2                      # the backend says: --workers, packed
    assert Config.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["toy_scale"] == 0.5
    help_text = " ".join(build_parser().format_help().split())
    assert "options of --algorithm toy: --toy-scale TOY_SCALE [toy] multiplies" in help_text
    with pytest.raises(ConfigError, match="--toy-scale: applies only to --algorithm toy"):
        from_args([*TINY, "--toy-scale", "0.5"])
    with pytest.raises(ConfigError, match="--toy-scale: overflows fp32"):
        from_args([*TINY, "--algorithm", "toy", "--toy-scale", "1e39"]).validate(2)
    with pytest.raises(ConfigError, match="--slowdown: needs the horovod backend"):
        from_args([*TINY, *TOY, "--backend", "toypacked", "--workers", "2",
                   "--slowdown", "1,2"]).validate()


def flag_value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_sweep_parser_and_commands_take_the_toys(toys, tmp_path):
    from prsgd.experiments import sweep
    args = sweep.build_parser().parse_args(["--out", str(tmp_path), "--backend", "toypacked",
                                            "--np", "2", "--intervals", "1,2", "--pack"])
    spec = sweep.spec_from_args(args, [*TINY, "--algorithm", "toy", "--toy-scale", "0.5"])
    cmd = job_command(spec, tmp_path / "runs", [("I2-s0", 2, 0)], resume=False)
    assert flag_value(cmd, "--backend") == "toypacked" and flag_value(cmd, "--workers") == "2"
    assert "--toy-scale" in cmd
    pack = job_command(spec, tmp_path / "runs", [("I1-s0", 1, 0), ("I2-s0", 2, 0)], False)
    assert flag_value(pack, "--backend") == "toypacked" and flag_value(pack, "--intervals") == "1,2"
    with pytest.raises(sweep.SweepError, match="run pack of seed 0: --toy-scale: must be > 0"):
        sweep.spec_from_args(args, [*TINY, "--algorithm", "toy", "--toy-scale", "-1"])


def test_a_toy_run_trains_and_the_plots_and_the_clock_read_it(toys, tmp_path):
    from prsgd.clock.model import KIND, Calibration, model_run
    from prsgd.plots.family import label
    from prsgd.records.results import load_run
    assert train.main([*TINY, *TOY, "--backend", "toypacked", "--workers", "2",
                       "--out", str(tmp_path), "--run-id", "toy"]) == 0
    meta, df = load_run(tmp_path / "toy")
    assert meta["config"]["backend"] == "toypacked"
    assert label(meta) == "toy I=2 x0.5"
    assert df["lr"].iloc[-1] == pytest.approx(0.1 * 0.5)          # its lr() ran
    # 2 workers x 16 images / batch 8 = 2 steps, 1 round (every I = 2 steps)
    assert (int(df["step"].iloc[-1]), int(df["rounds"].iloc[-1])) == (2, 1)
    cal = Calibration.from_dict({"kind": KIND, "name": "t", "compute": {"seconds_per_step": 0.5},
                                 "network": {"ranks_per_node": 2, "overhead_s": 0.0, "levels": {
                                     "intra": {"alpha_s": 0.0, "bandwidth_Bps": 1e6}}}})
    m = model_run(cal, meta, df).iloc[-1]
    payload = meta["derived"]["averaged_floats"] * 4
    # 2 steps x 0.5 s + 1 ring allreduce of 2 workers: 2(n-1)/n x payload / bandwidth
    assert m["model_seconds"] == pytest.approx(2 * 0.5 + payload / 1e6)


def test_torchdist_is_sweepable_through_torchrun(tmp_path):
    from prsgd.experiments import sweep
    args = sweep.build_parser().parse_args(["--out", str(tmp_path), "--backend", "torchdist",
                                            "--np", "3", "--intervals", "4"])
    spec = sweep.spec_from_args(args, ["--preset", "smoke"])
    cmd = job_command(spec, tmp_path / "runs", [("I4-s0", 4, 0)], resume=False)
    assert cmd[0].endswith("torchrun")     # the venv's torchrun, next to this Python
    assert cmd[1:6] == ["--standalone", "--nproc-per-node", "3", "-m", "prsgd.train"]
    assert flag_value(cmd, "--backend") == "torchdist"
