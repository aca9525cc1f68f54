"""Every bad input the tests try, the message each gets, and the table in docs/reliability.md made from them.

    PYTHONPATH=src python tests/helpers/bad_inputs.py     # prints the table for docs/reliability.md

Each case runs the real command line: in-process through `prsgd.train.main` (one torch import
for all), or through `horovodrun -np 2 --gloo` where the launcher is part of the input. Paths
under the temporary folder are shown as DIR.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

# One process, two packed workers, 32 images: every case fails (or would train) in seconds.
BASE = ["--preset", "smoke", "--backend", "packed", "--workers", "2", "--train-subset", "32",
        "--test-subset", "32", "--batch-size", "8", "--epochs", "1", "--eval-every", "0",
        "--progress", "false"]
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"


@dataclass
class Case:
    shown: str            # the bad part of the command line, as a user would type it
    args: list[str]       # appended to BASE (DIR is replaced by the temporary folder)
    expect: str           # a fragment the message must contain (the argument's name at least)
    launcher: bool = False  # run under horovodrun -np 2 (BASE's packed backend is dropped)
    tool: str = "train"   # train (BASE + args), sweep (scripts/sweep.py args), plot, clock
    #                       (python -m prsgd.clock args), lab (python -m prsgd.lab args), levels
    #                       (scripts/lab_levels.py args)
    exit: int | None = None   # the exit status it must have (None: any non-zero)


SWEEP = ["--out", "DIR/sweep", "--data", "synthetic", "--backend", "packed", "--np", "2",
         "--intervals", "1,4", "--no-preflight"]
LONG_ID = "x" * 300
COMBINE = ["combine", "--compute", "DIR/clock/good.json", "--network", "preset:pcie3-box",
           "--name", "x", "--out", "DIR/clock/out.json"]
PREDICT = ["predict", "DIR/runs/done", "--clock"]
CODECS = ["calibrate-compute", "--out", "DIR/clock/codecs.json", "--codecs"]


CASES = [
    Case("--interval 0", ["--interval", "0"], "--interval: must be a positive integer"),
    Case("--interval -3", ["--interval", "-3"], "--interval: must be a positive integer"),
    Case("--interval 2.5", ["--interval", "2.5"], "--interval: expected an integer, got '2.5'"),
    Case("--interval four", ["--interval", "four"], "--interval: expected an integer"),
    Case("--epochs 0", ["--epochs", "0"], "--epochs: must be a positive integer"),
    Case("--lr 0", ["--lr", "0"], "--lr: must be > 0"),
    Case("--momentum 1.5", ["--momentum", "1.5"], "--momentum: must be in [0, 1)"),
    Case("--checkpoint-every -1", ["--checkpoint-every", "-1"], "--checkpoint-every: must be >= 0"),
    Case("--preset huge", ["--preset", "huge"], "--preset: must be one of paper, demo, smoke"),
    Case("--algorithm sgd", ["--algorithm", "sgd"], "--algorithm: must be one of prsgd"),
    Case("--dataset mnist", ["--dataset", "mnist"], "--dataset: must be one of synthetic"),
    Case("--backend mpi", ["--backend", "mpi"], "--backend: must be one of horovod, packed"),
    Case("--backend torchdist without torchrun", ["--backend", "torchdist"],
         "--backend torchdist: start the ranks with torchrun"),
    Case("--backend packed --workers 0", ["--workers", "0"],
         "--workers: the packed backend needs --workers N"),
    Case("--workers 4 under prsgd.supervise horovodrun -np 2", ["--workers", "4"],
         "--workers: does not match the launcher's 2 ranks", launcher=True),
    Case("--slowdown 1,2,3 (2 workers)", ["--slowdown", "1,2,3"],
         "--slowdown: needs one value per worker (2)"),
    Case("--batch-size 64 (shard of 16 images)", ["--batch-size", "64"],
         "--batch-size: 64 is larger than a worker's shard"),
    Case("--dataset imagefolder (no --data)", ["--dataset", "imagefolder"],
         "--data: --dataset imagefolder needs --data PATH"),
    Case("--data of a missing path", ["--dataset", "imagefolder", "--data", "DIR/missing"],
         "--data: DIR/missing does not exist"),
    Case("--dataset cifar10 --data of a missing folder",
         ["--dataset", "cifar10", "--data", "DIR/missing"], "--data: DIR/missing is not a"),
    Case("a data zip with one byte changed", ["--dataset", "imagefolder", "--data",
                                              "DIR/onebyte/data.zip"], "fails its CRC check"),
    Case("a truncated data zip", ["--dataset", "imagefolder", "--data", "DIR/truncated/data.zip"],
         "not a readable zip"),
    Case("--resume --restart", ["--resume", "--restart"], "--restart: --resume and --restart"),
    Case("--out/--run-id of an existing run, no --resume",
         ["--out", "DIR/runs", "--run-id", "done"], "--out/--run-id: DIR/runs/done already "
                                                    "holds a run (status done)"),
    Case("--resume with another --interval", ["--out", "DIR/runs", "--run-id", "done",
                                              "--resume", "--interval", "8"],
         "--interval: 1 in the run, 8 now"),
    Case("--resume of a corrupted checkpoint", ["--out", "DIR/runs", "--run-id", "broken",
                                                "--resume"], "checkpoint.pt is unreadable"),
    # --- issue 14: numbers that are not numbers, or out of range ------------------------------
    Case("--lr nan", ["--lr", "nan"], "--lr: must be a finite number"),
    Case("--lr inf", ["--lr", "inf"], "--lr: must be a finite number"),
    Case("--lr 1e39 (beyond fp32)", ["--lr", "1e39"], "--lr: overflows fp32"),
    Case("--weight-decay nan", ["--weight-decay", "nan"], "--weight-decay: must be a finite"),
    Case("--lr-gamma -0.5", ["--lr-gamma", "-0.5"], "--lr-gamma: the lr decay factor must be > 0"),
    Case("--lr-gamma inf", ["--lr-gamma", "inf"], "--lr-gamma: must be a finite number"),
    Case("--lr-milestones -1", ["--epochs", "4", "--lr-milestones", "-1"],
         "--lr-milestones: every milestone must be a positive epoch"),
    Case("--lr-milestones 5 (1 epoch)", ["--lr-milestones", "5"],
         "--lr-milestones: every milestone must be an epoch of the run (1..1)"),
    Case("--lr-milestones 3,2", ["--epochs", "4", "--lr-milestones", "3,2"],
         "--lr-milestones: must be strictly increasing"),
    Case("--lr-milestones 2,2", ["--epochs", "4", "--lr-milestones", "2,2"],
         "--lr-milestones: must be strictly increasing"),
    Case("--seed -1", ["--seed", "-1"], "--seed: must be in 0..4294967295"),
    Case("--seed 2**64", ["--seed", str(2**64)], "--seed: must be in 0..4294967295"),
    Case("--epochs 10**9", ["--epochs", str(10**9)], "--epochs: must be at most 1000000"),
    Case("--train-subset 10**12 (synthetic)", ["--train-subset", str(10**12)],
         "--train-subset: 1000000000000 generated samples need"),
    Case("--test-subset larger than the dataset", ["--dataset", "imagefolder", "--data",
                                                   "DIR/ok/data.zip", "--train-subset", "16",
                                                   "--test-subset", "500"],
         "--test-subset: 500 is more than the 20 test images"),
    Case("--intervals 4,4 (packed)", ["--intervals", "4,4"], "--intervals: each interval once"),
    Case("--run-id ../escape", ["--out", "DIR/runs", "--run-id", "../escape"],
         "--run-id: must be one directory name inside --out"),
    Case("--run-id /abs/path", ["--out", "DIR/runs", "--run-id", "/abs/path"],
         "--run-id: must be one directory name inside --out"),
    Case("--run-id a/b", ["--out", "DIR/runs", "--run-id", "a/b"],
         "--run-id: must be one directory name"),
    Case("--run-id of 300 characters", ["--out", "DIR/runs", "--run-id", LONG_ID],
         "--run-id: 300 bytes, longer than a file name may be"),
    Case("--out that is a file", ["--out", "DIR/afile"], "--out: DIR/afile is not a directory"),
    Case("--out below a file", ["--out", "DIR/afile/runs"], "--out: DIR/afile is not a directory"),
    Case("--see 3 (abbreviated --seed)", ["--see", "3"], "unrecognized arguments: --see 3"),
    # --- issue 14: datasets whose labels would not mean what they say ------------------------
    Case("test classes differ from train classes", ["--dataset", "imagefolder", "--data",
                                                    "DIR/shifted/data.zip"],
         "the test split's classes differ from the train split's"),
    Case("12 classes (the model has 10 outputs)", ["--dataset", "imagefolder", "--data",
                                                   "DIR/twelve/data.zip"],
         "12 classes, more than the model's 10 outputs"),
    Case("a one-class dataset", ["--dataset", "imagefolder", "--data", "DIR/oneclass/data.zip"],
         "1 class (class0); classification needs at least 2"),
    Case("a dangling symlink in an image tree", ["--dataset", "imagefolder", "--data",
                                                 "DIR/dangling"], "(a dangling symlink)"),
    # --- issue 21 §2: an algorithm's options must fit the run ----------------------------------
    Case("--algorithm hetero --worker-intervals 2,1000000 (2 steps per worker)",
         ["--algorithm", "hetero", "--worker-intervals", "2,1000000"],
         "--worker-intervals: a round of 1000000 local steps is longer than the run (2 steps"),
    Case("--algorithm hetero --worker-intervals 2,3 (2 steps per worker)",
         ["--algorithm", "hetero", "--worker-intervals", "2,3"],
         "--worker-intervals: a round of 3 local steps is longer than the run"),
    Case("--algorithm diloco --outer-lr 1e39 (beyond fp32)",
         ["--algorithm", "diloco", "--outer-lr", "1e39"], "--outer-lr: overflows fp32"),
    Case("--algorithm varying --epoch-lengths 2 --epoch-lrs inf",
         ["--algorithm", "varying", "--epoch-lengths", "2", "--epoch-lrs", "inf"],
         "--epoch-lrs: must be a finite number"),
    Case("--algorithm varying --epoch-lengths 2 --epoch-growth 1e308",
         ["--algorithm", "varying", "--epoch-lengths", "2", "--epoch-growth", "1e308"],
         "--epoch-growth: grows the last epoch length beyond"),
    Case("--outer-lr 0.5 with --algorithm prsgd", ["--outer-lr", "0.5"],
         "--outer-lr: applies only to --algorithm diloco"),
    Case("--algorithm gradient_allreduce --bucket-mb -1",
         ["--algorithm", "gradient_allreduce", "--bucket-mb", "-1"],
         "--bucket-mb: must be a finite number of MiB >= 0"),
    Case("--algorithm gradient_allreduce --bucket-mb nan",
         ["--algorithm", "gradient_allreduce", "--bucket-mb", "nan"], "--bucket-mb:"),
    Case("--bucket-mb 1 with --algorithm prsgd", ["--bucket-mb", "1"],
         "--bucket-mb: applies only to --algorithm gradient_allreduce"),
    # --- issue 19 §3: overlapped averaging ------------------------------------------------------
    Case("--overlap-delay -1", ["--overlap-delay", "-1"], "--overlap-delay: must be >= 0"),
    Case("--interval 4 --overlap-delay 4", ["--interval", "4", "--overlap-delay", "4"],
         "--overlap-delay: must be < --interval 4"),
    Case("--overlap-delay 2 --intervals 2,4", ["--overlap-delay", "2", "--intervals", "2,4"],
         "--overlap-delay: must be < every --intervals I 2"),
    Case("--overlap-delay 1 --diagnostics", ["--interval", "2", "--overlap-delay", "1",
                                             "--diagnostics"],
         "--overlap-delay: not with --diagnostics"),
    Case("--overlap-delay 1 with --algorithm diloco", ["--algorithm", "diloco",
                                                       "--overlap-delay", "1"],
         "--overlap-delay: applies only to --algorithm prsgd or kavg"),
    Case("--algorithm adacomm --adacomm-every-epochs 0",
         ["--algorithm", "adacomm", "--adacomm-every-epochs", "0"],
         "--adacomm-every-epochs: must be a positive integer (got 0)"),
    # --- issue 19: compressed averaging ---------------------------------------------------------
    Case("--compressor zip", ["--compressor", "zip"],
         "--compressor: must be one of none, fp16, bf16, int8, topk"),
    Case("--compressor topk --topk-ratio 0", ["--compressor", "topk", "--topk-ratio", "0"],
         "--topk-ratio: must be in (0, 1]"),
    Case("--compressor topk --topk-ratio 1.5", ["--compressor", "topk", "--topk-ratio", "1.5"],
         "--topk-ratio: must be in (0, 1]"),
    Case("--compressor int8 --topk-ratio 0.1", ["--compressor", "int8", "--topk-ratio", "0.1"],
         "--topk-ratio: applies only to --compressor topk, not int8"),
    Case("--compressor int8 --algorithm hetero", ["--compressor", "int8", "--algorithm", "hetero"],
         "--compressor: compresses the model averages of --algorithm prsgd"),
    Case("--compressor fp16 --average-momentum", ["--compressor", "fp16", "--average-momentum"],
         "--average-momentum: not with --compressor"),
    # --- issue 14: resumes must match what ran; one owner per run -----------------------------
    Case("--resume with another --test-subset", ["--out", "DIR/runs", "--run-id", "cut",
                                                 "--resume", "--test-subset", "16"],
         "--test-subset: 32 in the run, 16 now"),
    Case("--resume with --max-steps added", ["--out", "DIR/runs", "--run-id", "cut", "--resume",
                                             "--max-steps", "64"],
         "--max-steps: 0 in the run, 64 now"),
    Case("--resume of a done run (--checkpoint-every 0)",
         ["--out", "DIR/runs", "--run-id", "nockpt", "--resume", "--checkpoint-every", "0"],
         "is already done (epoch 1); nothing to resume", exit=0),
    Case("--resume with an invalid config.json", ["--out", "DIR/runs", "--run-id", "badcfg",
                                                  "--resume"],
         "DIR/runs/badcfg/config.json: not valid JSON"),
    Case("--resume of a run a live process owns", ["--out", "DIR/runs", "--run-id", "owned",
                                                   "--resume"],
         "DIR/runs/owned is in use by a live process: pid N"),
    # --- issue 14: the sweep's arguments ------------------------------------------------------
    Case("sweep: -- --see 3 (abbreviated --seed)", [*SWEEP, "--", "--see", "3"],
         "unrecognized arguments: --see 3", tool="sweep"),
    Case("sweep: -- --seed=3", [*SWEEP, "--", "--seed=3"], "--seed: the sweep sets", tool="sweep"),
    Case("sweep: --override 'I4-s0=--seed 9'", [*SWEEP, "--override", "I4-s0=--seed 9"],
         "--override I4-s0: --seed: the sweep sets", tool="sweep"),
    Case("sweep: --override 'I4-s0=--out elsewhere'", [*SWEEP, "--override",
                                                       "I4-s0=--out elsewhere"],
         "--override I4-s0: --out: the sweep sets", tool="sweep"),
    # --- issue 21 §3: the flags the sweep sets are refused wherever else they appear -------------
    Case("sweep (packed): --override 'I4-s0=--workers 4'", [*SWEEP, "--override",
                                                            "I4-s0=--workers 4"],
         "--override I4-s0: --workers: the sweep sets", tool="sweep"),
    Case("sweep --backend horovod -- --backend packed",
         [*SWEEP[:4], "--backend", "horovod", *SWEEP[6:], "--", "--backend", "packed"],
         "--backend: the sweep sets", tool="sweep"),
    Case("sweep: --intervals 4,4", [*SWEEP, "--intervals", "4,4"],
         "--intervals: each interval once", tool="sweep"),
    Case("sweep: --seeds 0,0", [*SWEEP, "--seeds", "0,0"], "--seeds: each seed once",
         tool="sweep"),
    Case("sweep: -- --lr nan", [*SWEEP, "--", "--lr", "nan"], "--lr: must be a finite number",
         tool="sweep"),
    Case("sweep: an invalid manifest.json", ["--out", "DIR/badsweep", "--data", "synthetic",
                                             "--backend", "packed", "--no-preflight"],
         "DIR/badsweep/manifest.json: not valid JSON", tool="sweep"),
    # --- issue 14: the plot's inputs ----------------------------------------------------------
    Case("plot: a metrics.csv torn mid-file", ["DIR/plot-torn"],
         "DIR/plot-torn/r/metrics.csv: line 2 is torn or malformed", tool="plot"),
    Case("plot: an invalid config.json", ["DIR/plot-badcfg"],
         "DIR/plot-badcfg/r/config.json: not valid JSON", tool="plot"),
    # --- issue 21: numbers that enter the clock -----------------------------------------------
    Case("clock combine --cycle-time-ms -5", [*COMBINE, "--cycle-time-ms", "-5"],
         "--cycle-time-ms: must be a number >= 0, not -5.0", tool="clock"),
    Case("clock combine --cycle-time-ms nan", [*COMBINE, "--cycle-time-ms", "nan"],
         "--cycle-time-ms: must be a number >= 0, not nan", tool="clock"),
    Case("clock: a calibration with bandwidth 0", [*PREDICT, "DIR/clock/bw0.json"],
         "DIR/clock/bw0.json: network.levels.inter.bandwidth_Bps must be a number > 0, not 0",
         tool="clock"),
    Case("clock: a calibration with a NaN step time", [*PREDICT, "DIR/clock/nan.json"],
         "DIR/clock/nan.json: compute.seconds_per_step must be a number > 0, not nan",
         tool="clock"),
    Case("clock: a calibration with a step time as text", [*PREDICT, "DIR/clock/text.json"],
         'compute.seconds_per_step must be a number > 0, not "0.1"', tool="clock"),
    Case("clock: a calibration that is not JSON", [*PREDICT, "DIR/clock/torn.json"],
         "DIR/clock/torn.json: not valid JSON", tool="clock"),
    Case("clock: a calibration that is a JSON list", [*PREDICT, "DIR/clock/list.json"],
         "DIR/clock/list.json: a JSON list, not an object", tool="clock"),
    Case("clock predict of a directory that is not a run",
         ["predict", "DIR/clock", "--clock", "DIR/clock/good.json"],
         "DIR/clock: not a run directory (it has no config.json)", tool="clock"),
    Case("clock combine: a compute part with a negative step time",
         ["combine", "--compute", "DIR/clock/negative.json", "--network", "preset:pcie3-box",
          "--name", "x", "--out", "DIR/clock/out.json"],
         "DIR/clock/negative.json: compute.seconds_per_step must be a number > 0, not -0.1",
         tool="clock"),
    # --- issue 21: resources and messages -----------------------------------------------------
    Case("--run-id of a dangling symlink", ["--out", "DIR/links", "--run-id", "dangling"],
         "--out/--run-id: DIR/links/dangling is a dangling symlink"),
    Case("--run-id of a symlink loop", ["--out", "DIR/links", "--run-id", "loop"],
         "--out/--run-id: DIR/links/loop is a symlink loop"),
    Case("lab up --rate 0", ["up", "--name", "never", "--rate", "0"],
         "--rate: '0' is no rate at all; say --rate none", tool="lab"),
    Case("plot: runs of different N", ["DIR/plot-mixed"],
         "DIR/plot-mixed: runs of different worker counts cannot share one figure", tool="plot"),
    Case("lab_levels.py on a folder without runs", ["DIR/afolder"],
         "lab_levels: error: no runs with metrics under DIR/afolder", tool="levels"),
    # --- issue 19: codec times for the clock ------------------------------------------------
    Case("clock calibrate-compute --codecs zip", [*CODECS, "zip"],
         "--codecs 'zip': unknown compressor 'zip'", tool="clock", exit=2),
    Case("clock calibrate-compute --codecs topk:2", [*CODECS, "topk:2"],
         "--codecs 'topk:2':", tool="clock", exit=2),
    Case("clock calibrate-compute --codecs fp16:3", [*CODECS, "fp16:3"],
         "--codecs 'fp16:3': fp16 takes no option", tool="clock", exit=2),
]


def png(rng) -> bytes:
    import numpy as np
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_zip(path: Path, per_class: int = 2, classes: int = 10, test_classes=None) -> None:
    """A small valid ImageFolder zip (train/ and test/, 10 classes of 32x32 PNGs), stored.
    `test_classes`: the test split's class names, if not the train split's."""
    import numpy as np
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = {"train": [f"class{c}" for c in range(classes)]}
    names["test"] = list(test_classes) if test_classes is not None else names["train"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for split in ("train", "test"):
            for name in names[split]:
                for i in range(per_class):
                    z.writestr(f"{split}/{name}/{i}.png", png(rng))


def make_tree(root: Path, classes: int = 2, per_class: int = 2) -> None:
    """A small ImageFolder tree: root/{train,test}/classK/i.png."""
    import numpy as np
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (d / f"{i}.png").write_bytes(png(rng))


def corrupt_one_byte(path: Path) -> None:
    """Change one byte in the middle of the first member's data."""
    with zipfile.ZipFile(path) as z:
        info = z.infolist()[0]
    raw = bytearray(path.read_bytes())
    # The local header is 30 bytes + name + extra; the data follows.
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) \
        + info.compress_size // 2
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate(path: Path, keep: float = 0.6) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def hold(directory: Path) -> subprocess.Popen:
    """A live process owning `directory` (until killed), as a running trainer would."""
    code = ("import sys, time; from prsgd.records import ownership; "
            "ownership.acquire(sys.argv[1]); print('owned', flush=True); time.sleep(3600)")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "owned"
    return proc


def setup(tmp: Path) -> list[subprocess.Popen]:
    """The files some cases need: corrupted data copies, a finished run, a broken checkpoint;
    returns the processes to stop afterwards (the owner of DIR/runs/owned)."""
    for name, spoil in (("onebyte", corrupt_one_byte), ("truncated", truncate)):
        make_zip(tmp / name / "data.zip")
        spoil(tmp / name / "data.zip")
    make_zip(tmp / "ok" / "data.zip")
    make_zip(tmp / "shifted" / "data.zip", classes=3, test_classes=["class0", "class1", "other"])
    make_zip(tmp / "twelve" / "data.zip", per_class=1, classes=12)
    make_zip(tmp / "oneclass" / "data.zip", classes=1)
    make_tree(tmp / "dangling")
    (tmp / "dangling" / "train" / "class0" / "9.png").symlink_to(tmp / "nowhere.png")
    (tmp / "afile").write_text("not a folder\n")
    from prsgd.train import main
    runs = tmp / "runs"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for run_id in ("done", "broken", "cut", "badcfg", "owned"):
            assert main([*BASE, "--out", str(runs), "--run-id", run_id]) == 0
        assert main([*BASE, "--out", str(runs), "--run-id", "nockpt",
                     "--checkpoint-every", "0"]) == 0
    truncate(runs / "broken" / "checkpoint.pt", 0.5)
    for run_id in ("cut", "badcfg", "owned"):   # as a killed run leaves them: resumable
        (runs / run_id / "status.json").write_text('{"status": "interrupted", "epoch": 1}\n')
    (runs / "badcfg" / "config.json").write_text('{"config": {"lr": 0.1,')
    # A sweep directory whose manifest.json was torn; plot inputs torn or invalid.
    (tmp / "badsweep").mkdir()
    (tmp / "badsweep" / "manifest.json").write_text('{"spec": {')
    for name in ("plot-torn", "plot-badcfg"):
        shutil.copytree(runs / "done", tmp / name / "r")
    csv_path = tmp / "plot-torn" / "r" / "metrics.csv"
    lines = csv_path.read_text().splitlines()
    # torn after its 9th field (not at half its length: the clock columns' digits vary)
    torn = ",".join(lines[1].split(",")[:9])
    csv_path.write_text("\n".join([lines[0], torn, lines[1]]) + "\n")
    (tmp / "plot-badcfg" / "r" / "config.json").write_text("{not json")
    clock_files(tmp / "clock")
    (tmp / "links").mkdir()
    (tmp / "links" / "dangling").symlink_to(tmp / "nowhere")
    (tmp / "links" / "loop").symlink_to("loop")
    (tmp / "afolder").mkdir()
    shutil.copytree(runs / "done", tmp / "plot-mixed" / "N2")     # and a run of 4 workers
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        n4 = [a if a != "2" else "4" for a in BASE]
        assert main([*n4, "--out", str(tmp / "plot-mixed"), "--run-id", "N4"]) == 0
    return [hold(runs / "owned")]


def clock_files(d: Path) -> None:
    """Calibrations, good and each way bad (prsgd.clock: issue 21 §1)."""
    import json
    d.mkdir()
    good = {"kind": "prsgd-clock-calibration", "compute": {"seconds_per_step": 0.1},
            "network": {"ranks_per_node": 1, "overhead_s": 0.0005, "levels": {
                "inter": {"alpha_s": 1e-5, "bandwidth_Bps": 1e9}}}}
    (d / "good.json").write_text(json.dumps(good))
    bw0 = json.loads(json.dumps(good))
    bw0["network"]["levels"]["inter"]["bandwidth_Bps"] = 0
    (d / "bw0.json").write_text(json.dumps(bw0))
    for name, value in (("nan", float("nan")), ("text", "0.1"), ("negative", -0.1)):
        (d / f"{name}.json").write_text(json.dumps({**good, "compute": {
            "seconds_per_step": value}}))
    (d / "torn.json").write_text('{"kind": "prsgd-clock-calib')
    (d / "list.json").write_text("[0.1, 1e9]")


def normalize(text: str, tmp: Path) -> str:
    """Paths under the temporary folder as DIR, PIDs as N, this host as HOST, the command as CMD:
    the table reads the same on every machine."""
    text = text.replace(str(tmp), "DIR").replace(socket.gethostname(), "HOST")
    text = re.sub(r"\((ppid|pid) \d+", r"(\1 N", re.sub(r"\b(ppid|pid) \d+", r"\1 N", text))
    return re.sub(r" \(-c DIR[^)]*\)", " (CMD)", text)


def run_tool(case: Case, args: list[str]) -> tuple[int, str]:
    """Run a case's command line in this process: (exit code, everything it printed). A Python
    traceback is caught and returned as output, so the table shows it instead of stopping."""
    from prsgd.plots import figure3 as plot
    from prsgd.experiments import sweep
    from prsgd import train
    from prsgd.clock import cli as clock
    from prsgd.lab import cli as lab
    entry = {"train": lambda: train.main([*BASE, *args]), "sweep": lambda: sweep.main(args),
             "plot": lambda: plot.main(args), "clock": lambda: clock.main(args),
             "lab": lambda: lab.main(args), "levels": lambda: lab_levels().main(args)}[case.tool]
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        try:
            code = entry()
        except SystemExit as e:  # argparse
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = "traceback"
    return code, out.getvalue()


def lab_levels():
    import importlib.util
    spec = importlib.util.spec_from_file_location("lab_levels", ROOT / "scripts" / "lab_levels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_case(case: Case, tmp: Path) -> tuple[int, str, str]:
    """(exit code, the error line, all output) of one case."""
    args = [a.replace("DIR", str(tmp)) for a in case.args]
    if case.launcher:   # through prsgd.supervise, as `make train` launches
        from conftest import subprocess_env
        base = [a for a in BASE if a not in ("--backend", "packed", "--workers", "2")]
        exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
        proc = subprocess.run([sys.executable, "-m", "prsgd.supervise", exe, "-np", "2", "--gloo",
                               sys.executable, "-m", "prsgd.train", *base, *args],
                              env=subprocess_env(), capture_output=True, text=True, timeout=300)
        lines = [ln.split(">:", 1)[-1] for ln in (proc.stdout + proc.stderr).splitlines()
                 if "prsgd.train: error:" in ln]
        code, output = proc.returncode, proc.stdout + proc.stderr
        text = lines[0] if lines else output
    else:
        code, output = run_tool(case, args)
        said = [ln for ln in output.splitlines() if "error:" in ln or "prsgd.train:" in ln]
        text = said[-1] if said else (output.strip().splitlines() or ["(no output)"])[-1]
    return code, normalize(text, tmp).strip(), output


def collect(tmp: Path) -> list[tuple[Case, int, str, str]]:
    os.environ["PRSGD_CACHE"] = str(tmp / "cache")
    holders = setup(tmp)
    try:
        return [(c, *run_case(c, tmp)) for c in CASES]
    finally:
        for p in holders:
            p.kill()
            p.wait()


def table(results) -> str:
    lines = [BEGIN, "| bad input | exit | message |", "|---|---|---|"]
    for case, code, text, _ in results:
        text = text.replace("|", "\\|")
        lines.append(f"| `{case.shown}` | {code} | {text} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    # --all: every case's whole output too (what tests/test_bad_input.py greps for tracebacks).
    with tempfile.TemporaryDirectory() as d:
        results = collect(Path(d))
        print(table(results))
        if "--all" in sys.argv:
            for case, code, _, output in results:
                print(f"\n### {case.shown} (exit {code})\n{output}")
        shutil.rmtree(d, ignore_errors=True)
