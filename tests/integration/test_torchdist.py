"""The torch.distributed backend with real `torchrun` ranks: it equals real `horovodrun --gloo`
ranks in fp64 on Algorithm 1 and Hier-AVG, a killed run resumes bit-identically, and a launch
without torchrun is refused with one line. Both launchers run on this machine over loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    ROOT, horovodrun, load_ckpt, metric_rows, rank_pids, run_status, subprocess_env, torchrun,
    torchrun_command, wait_for)

pytestmark = pytest.mark.horovod

# 2 workers x 48-image shards / batch 8 = 6 steps per epoch, 18 steps; I = 4 does not divide 6,
# so the workers' models differ at the epoch-end checkpoints (a checkpoint must keep both). The
# averaged model is evaluated once, at the end (average_copy).
TINY = ["-m", "prsgd.train", "--preset", "smoke", "--dataset", "synthetic", "--train-subset", "96",
        "--test-subset", "32", "--batch-size", "8", "--epochs", "3", "--interval", "4",
        "--eval-every", "3", "--seed", "7", "--precision", "fp64", "--progress", "true"]
# Hier-AVG: 4 workers in 2 groups of 2; 64 images / 4 / batch 4 = 4 steps per epoch, 11 steps:
# local (group) rounds at steps 2, 6, 10, global ones at 4, 8; step 11 leaves all four apart.
HIER = ["-m", "prsgd.train", "--preset", "smoke", "--dataset", "synthetic", "--train-subset", "64",
        "--test-subset", "32", "--batch-size", "4", "--epochs", "3", "--max-steps", "11",
        "--algorithm", "hier", "--interval", "2", "--group-size", "2", "--global-every", "2",
        "--seed", "3", "--precision", "fp64", "--progress", "false"]
TORCHDIST = ["--backend", "torchdist"]


def assert_rows_close(a: list[dict], b: list[dict], rtol: float):
    """Same columns, same integers, floats equal to `rtol` (empty cells equal)."""
    assert len(a) == len(b) > 0 and [r.keys() for r in a] == [r.keys() for r in b]
    for ra, rb in zip(a, b):
        for k in ra:
            if ra[k] == rb[k]:
                continue
            x, y = float(ra[k]), float(rb[k])
            assert abs(x - y) <= rtol * max(abs(x), abs(y)), f"epoch {ra['epoch']} {k}: {x} {y}"


def assert_same_weights(a: dict, b: dict, ranks: int, rtol: float = 1e-9) -> float:
    """Every rank's flat buffer of checkpoint `a` equals `b`'s to `rtol`; returns the largest
    relative difference seen."""
    worst = 0.0
    for r in range(ranks):
        x, y = a["ranks"][r]["flat"], b["ranks"][r]["flat"]
        assert x.dtype == y.dtype == torch.float64
        torch.testing.assert_close(x, y, rtol=rtol, atol=0.0, msg=f"rank {r} weights")
        worst = max(worst, ((x - y).abs() / y.abs().clamp_min(1e-300)).max().item())
    return worst


def both(tmp_path: Path, nproc: int, args: list[str], name: str) -> tuple[Path, Path]:
    """The same run under torchrun (--backend torchdist) and horovodrun (--backend horovod)."""
    td, hv = tmp_path / "td", tmp_path / "hvd"
    torchrun(nproc, [*args, *TORCHDIST, "--out", str(td), "--run-id", name], timeout=600)
    horovodrun(nproc, [*args, "--out", str(hv), "--run-id", name], timeout=600)
    return td / name, hv / name


@pytest.fixture(scope="module")
def tiny_torchrun(tmp_path_factory) -> Path:
    """An uninterrupted TINY run under torchrun: compared with Horovod's and with a resumed one."""
    out = tmp_path_factory.mktemp("tiny")
    torchrun(2, [*TINY, *TORCHDIST, "--out", str(out), "--run-id", "run"], timeout=600)
    return out / "run"


def _comm_results(out: Path, n: int) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(n)]


def test_every_collective_equals_horovods_and_the_arithmetic(tmp_path):
    """tests/helpers/comm_worker.py calls every collective of the Comm interface on 4 ranks (Hier-AVG's
    2 groups of 2 included), once under torchrun and once under horovodrun."""
    worker = str(ROOT / "tests" / "helpers" / "comm_worker.py")
    torchrun(4, [worker, "torchdist", str(tmp_path / "td")], timeout=300)
    horovodrun(4, [worker, "horovod", str(tmp_path / "hvd")], timeout=300)
    td, hv = _comm_results(tmp_path / "td", 4), _comm_results(tmp_path / "hvd", 4)
    data = torch.randn(4, 1001, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    for r, (a, b) in enumerate(zip(td, hv)):
        assert (a["rank"], a["size"], a["workers"], a["num_workers"]) == (r, 4, [r], 4)
        assert (a["local_rank"], a["local_size"]) == (r, 4)
        pair = data[r - r % 2: r - r % 2 + 2]
        # A group of 2 sums one addition: exact, and exactly Horovod's (sum, then scale).
        assert torch.equal(a["local"], pair.sum(0) * 0.5) and torch.equal(a["local"], b["local"])
        assert a["local_extra"].tolist() == [r - r % 2 + 0.5, 2 * (r - r % 2) + 1.0]
        assert torch.equal(a["local_extra"], b["local_extra"])
        expect = (data[0::2] + data[1::2]).mul(0.5).mean(0)
        torch.testing.assert_close(a["global"], expect, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(a["global"], b["global"], rtol=1e-9, atol=0.0)
        assert torch.equal(a["solo"], data[r])   # groups of one: nothing moves, nothing sent
        torch.testing.assert_close(a["copy"], data.mean(0), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(a["copy"], b["copy"], rtol=1e-9, atol=0.0)
        assert a["copy_untouched"] and b["copy_untouched"]
        assert a["sum"].tolist() == [[4.0, 6.0], [14.0, 2.0]] and torch.equal(a["sum"], b["sum"])
        assert a["rows"].tolist() == [[w, 10 * w, 7] for w in range(4)]
        assert torch.equal(a["rows"], b["rows"])
        assert torch.equal(a["bcast"], data[1]) and torch.equal(b["bcast"], data[1])
        assert a["object"] == b["object"] == {"from": 0, "none": None}
        assert [o["rank"] for o in a["objects"]] == [0, 1, 2, 3]
        assert all(torch.equal(o["t"], p["t"]) for o, p in zip(a["objects"], b["objects"]))
        # Counted as Horovod counts: a round per call, bytes of the region when a group has 2+;
        # an allreduce receives what it sends, and every byte went through an allreduce.
        assert a["counters"] == b["counters"] == {"rounds": {"global": 1, "local": 2},
                                                  "bytes": {"global": 8008, "local": 8008},
                                                  "received": {"global": 8008, "local": 8008},
                                                  "collective_bytes": {"allreduce": 16016,
                                                                       "allgather": 0}}


def test_algorithm1_equals_horovodrun_in_fp64(tmp_path, tiny_torchrun):
    td, hv = tiny_torchrun, tmp_path / "run"
    horovodrun(2, [*TINY, "--out", str(tmp_path), "--run-id", "run"], timeout=600)
    a, b = load_ckpt(td), load_ckpt(hv)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 18)
    worst = assert_same_weights(a, b, 2)
    print(f"Algorithm 1, torchrun vs horovodrun, fp64: max relative difference {worst:.3g}")
    # Not vacuous: the two workers' models differ at the end (18 % 4 != 0) ...
    assert not torch.equal(a["ranks"][0]["flat"], a["ranks"][1]["flat"])
    rows = metric_rows(td)
    assert_rows_close(rows, metric_rows(hv), rtol=1e-9)
    # ... every round was counted (at steps 4, 8, 12, 16), and the averaged model evaluated.
    assert [r["rounds"] for r in rows] == ["1", "3", "4"] and rows[-1]["bytes"] != "0"
    assert rows[-1]["test_acc"] != "" and rows[0]["test_acc"] == ""
    meta = json.loads((td / "config.json").read_text())
    assert meta["config"]["backend"] == "torchdist"
    assert meta["provenance"]["world_size"] == 2
    assert meta["provenance"]["comm"] == {"backend": "torchdist", "torch_distributed": "gloo",
                                          "timeout_s": 600.0}
    assert run_status(td)["status"] == "done"
    hv_comm = json.loads((hv / "config.json").read_text())["provenance"]["comm"]
    assert hv_comm["backend"] == "horovod"
    assert hv_comm["horovod_build"]["built"]["gloo"] is True   # Horovod's build (prsgd.install.doctor)


def test_hier_avg_equals_horovodrun_in_fp64(tmp_path):
    td, hv = both(tmp_path, 4, HIER, "hier")
    a, b = load_ckpt(td), load_ckpt(hv)
    assert a["step"] == b["step"] == 11
    worst = assert_same_weights(a, b, 4)
    print(f"Hier-AVG 2x2, torchrun vs horovodrun, fp64: max relative difference {worst:.3g}")
    # Not vacuous: after the local round of step 10 and the local step 11 all four differ.
    flats = [a["ranks"][r]["flat"] for r in range(4)]
    assert all(not torch.equal(flats[i], flats[j]) for i in range(4) for j in range(i))
    rows = metric_rows(td)
    assert_rows_close(rows, metric_rows(hv), rtol=1e-9)
    last = rows[-1]
    assert (last["rounds"], last["rounds_local"]) == ("2", "3")
    assert last["bytes_local"] != "0"


def test_dead_rank_ends_the_job_and_resume_is_bit_identical(tmp_path, tiny_torchrun):
    """SIGKILL one rank mid-epoch: torchrun ends the job quickly (no hang), and `--resume` from
    the last checkpoint finishes the run bit-identically to an uninterrupted torchrun run."""
    out = tmp_path / "runs"
    run_dir = out / "run"
    proc = subprocess.Popen(torchrun_command(2, [*TINY, *TORCHDIST, "--out", str(out),
                                                 "--run-id", "run"]),
                            env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: run_status(run_dir).get("checkpoint_epoch") == 1, 300, "epoch 1", proc)
        time.sleep(0.3)
        pids = rank_pids("run", "torchrun")
        assert sorted(pids) == [0, 1], pids
        killed = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        proc.wait(120)
        elapsed = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode != 0
    assert elapsed < 60, f"torchrun took {elapsed:.1f} s to end the job after a rank died"
    print(f"torchrun exited {proc.returncode} {elapsed:.1f} s after SIGKILL of rank 1")
    left = run_status(run_dir)
    # rank 0 either sees the dead peer (failed) or is stopped first by torchrun (interrupted)
    assert left["status"] in ("failed", "interrupted", "running"), left
    assert left["checkpoint_epoch"] in (1, 2)

    res = torchrun(2, [*TINY, *TORCHDIST, "--out", str(out), "--run-id", "run", "--resume"],
                   timeout=600)
    assert f"resumed from the checkpoint of epoch {left['checkpoint_epoch']}" in res.stdout
    a, b = load_ckpt(run_dir), load_ckpt(tiny_torchrun)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 18)
    for r in (0, 1):
        assert torch.equal(a["ranks"][r]["flat"], b["ranks"][r]["flat"]), f"rank {r} weights"
    assert not torch.equal(b["ranks"][0]["flat"], b["ranks"][1]["flat"])
    assert metric_rows(run_dir) == metric_rows(tiny_torchrun)
    assert run_status(run_dir)["status"] == "done"
    meta = json.loads((run_dir / "config.json").read_text())
    assert [r["from_epoch"] for r in meta["resumes"]] == [left["checkpoint_epoch"]]


def test_hung_rank_times_out_and_the_job_ends(tmp_path):
    """SIGSTOP one rank (alive, silent): the other's next collective fails after
    PRSGD_TORCHDIST_TIMEOUT_S, its status says failed, and torchrun ends the job."""
    out = tmp_path / "runs"
    run_dir = out / "hung"
    proc = subprocess.Popen(torchrun_command(2, [*TINY, *TORCHDIST, "--out", str(out),
                                                 "--run-id", "hung"]),
                            env=subprocess_env(PRSGD_TORCHDIST_TIMEOUT_S=5),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    pids = {}
    try:
        wait_for(lambda: run_status(run_dir).get("checkpoint_epoch") == 1, 300, "epoch 1", proc)
        pids = rank_pids("hung", "torchrun")
        assert sorted(pids) == [0, 1], pids
        stopped = time.monotonic()
        os.kill(pids[1], signal.SIGSTOP)
        proc.wait(180)
        elapsed = time.monotonic() - stopped
    finally:
        for pid in pids.values():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    # 5 s of collective timeout, then torchrun's grace period before it SIGKILLs the stopped rank.
    print(f"torchrun exited {proc.returncode} {elapsed:.1f} s after SIGSTOP of rank 1")
    assert proc.returncode != 0
    left = run_status(run_dir)
    assert left["status"] == "failed" and "Timed out" in left["message"], left


def _without_torchrun_env(**extra) -> dict:
    env = {k: v for k, v in subprocess_env().items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT", "PRSGD_TORCHDIST_TIMEOUT_S")}
    return dict(env, **{k: str(v) for k, v in extra.items()})


def _one_error_line(env: dict, out: Path) -> str:
    proc = subprocess.run([sys.executable, *TINY, *TORCHDIST, "--out", str(out), "--run-id", "x"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert not (out / "x").exists()
    return lines[0]


def test_torchdist_without_torchrun_is_refused_in_one_line(tmp_path):
    """Started with plain python (no torchrun variables): one line naming torchrun, exit 2, no
    run directory. A bad timeout (with a one-rank torchrun environment) likewise."""
    line = _one_error_line(_without_torchrun_env(), tmp_path / "a")
    assert "--backend torchdist" in line and "torchrun" in line and "RANK" in line, line
    one_rank = dict(RANK=0, WORLD_SIZE=1, LOCAL_RANK=0, LOCAL_WORLD_SIZE=1,
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=29999)
    for bad in ("abc", "0", "nan"):
        env = _without_torchrun_env(**one_rank, PRSGD_TORCHDIST_TIMEOUT_S=bad)
        line = _one_error_line(env, tmp_path / "b")
        assert f"PRSGD_TORCHDIST_TIMEOUT_S: must be a positive number of seconds (got '{bad}')" \
            in line, line


def test_the_sweep_drives_torchrun(tmp_path):
    """--backend torchdist is sweepable: each run is `torchrun --standalone --nproc-per-node N`,
    recorded in the manifest, and every run is done with torchrun's world."""
    from conftest import ROOT, run_python
    out = tmp_path / "sweep"
    run_python([str(ROOT / "scripts" / "sweep.py"), "--out", str(out), "--backend", "torchdist",
                "--np", "2", "--intervals", "1,2", "--data", "synthetic", "--",
                "--preset", "smoke", "--train-subset", "64", "--test-subset", "32",
                "--batch-size", "8", "--epochs", "1", "--device", "cpu"], timeout=600)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(r["status"], r["command"].split()[1:4]) for r in manifest["runs"]] == \
        [("done", ["--standalone", "--nproc-per-node", "2"])] * 2
    for rid in ("I1-s0", "I2-s0"):
        meta = json.loads((out / "runs" / rid / "config.json").read_text())
        assert meta["config"]["backend"] == "torchdist"
        assert meta["provenance"]["world_size"] == 2
