"""Every bad input the tests try, the message each gets, and the README table made from them.

    PYTHONPATH=src python tests/bad_inputs.py     # prints the table for README.md

Each case runs the real command line: in-process through `prsgd.train.main` (one torch import
for all), or through `horovodrun -np 2 --gloo` where the launcher is part of the input. Paths
under the temporary folder are shown as DIR.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
    Case("--workers 4 under horovodrun -np 2", ["--workers", "4"],
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
]


def make_zip(path: Path, per_class: int = 2) -> None:
    """A small valid ImageFolder zip (train/ and test/, 10 classes of 32x32 PNGs), stored."""
    import numpy as np
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for split in ("train", "test"):
            for c in range(10):
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(buf, "PNG")
                    z.writestr(f"{split}/class{c}/{i}.png", buf.getvalue())


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


def setup(tmp: Path) -> None:
    """The files some cases need: corrupted data copies, a finished run, a broken checkpoint."""
    for name, spoil in (("onebyte", corrupt_one_byte), ("truncated", truncate)):
        make_zip(tmp / name / "data.zip")
        spoil(tmp / name / "data.zip")
    from prsgd.train import main
    with contextlib.redirect_stdout(io.StringIO()):
        for run_id in ("done", "broken"):
            assert main([*BASE, "--out", str(tmp / "runs"), "--run-id", run_id]) == 0
    truncate(tmp / "runs" / "broken" / "checkpoint.pt", 0.5)


def run_case(case: Case, tmp: Path) -> tuple[int, str]:
    """(exit code, the error line) of one case."""
    args = [a.replace("DIR", str(tmp)) for a in case.args]
    if case.launcher:
        from conftest import horovodrun
        base = [a for a in BASE if a not in ("--backend", "packed", "--workers", "2")]
        proc = horovodrun(2, ["-m", "prsgd.train", *base, *args], check=False, timeout=300)
        lines = [ln.split(">:", 1)[-1] for ln in (proc.stdout + proc.stderr).splitlines()
                 if "prsgd.train: error:" in ln]
        code, text = proc.returncode, lines[0] if lines else proc.stdout + proc.stderr
    else:
        from prsgd.train import main
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main([*BASE, *args])
            except SystemExit as e:  # argparse
                code = e.code
        text = [ln for ln in err.getvalue().splitlines() if "error:" in ln][-1]
    return code, text.replace(str(tmp), "DIR").strip()


def collect(tmp: Path) -> list[tuple[Case, int, str]]:
    os.environ["PRSGD_CACHE"] = str(tmp / "cache")
    setup(tmp)
    return [(c, *run_case(c, tmp)) for c in CASES]


def table(results) -> str:
    lines = [BEGIN, "| bad input | exit | message |", "|---|---|---|"]
    for case, code, text in results:
        text = text.replace("|", "\\|")
        lines.append(f"| `{case.shown}` | {code} | {text} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        print(table(collect(Path(d))))
        shutil.rmtree(d, ignore_errors=True)
