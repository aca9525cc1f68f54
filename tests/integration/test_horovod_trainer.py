"""Algorithm 1 with real `horovodrun -np 2 --gloo` ranks (issue 2, criteria 2, 3, 4, 5)."""
import json

import pytest
import torch

from conftest import horovodrun, ROOT
from prsgd.records.results import load_run

pytestmark = pytest.mark.horovod
WORKER = str(ROOT / "tests" / "helpers" / "hvd_worker.py")
TINY = ["--preset", "smoke", "--dataset", "synthetic", "--train-subset", "256",
        "--batch-size", "8", "--eval-every", "0", "--progress", "false"]


def record(tmp_path, name, args, np_=2):
    prefix = tmp_path / name
    horovodrun(np_, [WORKER, str(prefix), *TINY, "--out", str(tmp_path / "runs"),
                     "--run-id", name, *args], timeout=240)
    lines = [[json.loads(l) for l in open(f"{prefix}.rank{r}.jsonl")] for r in range(np_)]
    finals = [torch.load(f"{prefix}.rank{r}.pt", weights_only=True) for r in range(np_)]
    return lines, finals, tmp_path / "runs" / name


def test_ranks_agree_exactly_after_each_round_and_differ_between(tmp_path):
    T, I = 11, 3
    lines, _, run_dir = record(tmp_path, "alg1", ["--interval", str(I), "--max-steps", str(T),
                                                  "--seed", "5"])
    r0, r1 = lines
    assert [l["step"] for l in r0] == list(range(1, T + 1))
    for a, b in zip(r0, r1):
        averaged = a["step"] % I == 0
        assert bool(a["events"]) == averaged and bool(b["events"]) == averaged
        if averaged:
            assert a["state_sha"] == b["state_sha"], f"step {a['step']}: ranks differ after a round"
        else:
            assert a["state_sha"] != b["state_sha"], f"step {a['step']}: ranks equal between rounds"
    _, metrics = load_run(run_dir)
    assert int(metrics["rounds"].iloc[-1]) == T // I
    assert int(metrics["step"].iloc[-1]) == T


def test_same_seed_same_data_order_for_different_intervals(tmp_path):
    a, _, _ = record(tmp_path, "i1", ["--interval", "1", "--max-steps", "20", "--seed", "7"])
    b, _, _ = record(tmp_path, "i4", ["--interval", "4", "--max-steps", "20", "--seed", "7"])
    for rank in range(2):
        assert [l["batch"] for l in a[rank]] == [l["batch"] for l in b[rank]]
    # The two ranks' batches of the first epoch (16 steps) are disjoint and cover the data.
    s0 = {i for l in a[0][:16] for i in l["batch"][0]}
    s1 = {i for l in a[1][:16] for i in l["batch"][0]}
    assert not s0 & s1 and s0 | s1 == set(range(256))
    # The next epoch draws a new permutation.
    assert a[0][16]["batch"] != a[0][0]["batch"]


@pytest.mark.parametrize("momentum", ["0.9", "0"])
def test_interval_one_equals_gradient_allreduce(tmp_path, momentum):
    """I = 1 model averaging (with momentum buffers averaged when momentum > 0) gives the same
    weights as Horovod's DistributedOptimizer after 20 steps. In float64: BatchNorm over a batch
    of 8 amplifies float32 rounding (1e-7) by about 1e4 per step on some batches, which would
    hide a real difference behind noise."""
    common = ["--max-steps", "20", "--seed", "2", "--momentum", momentum, "--lr", "0.05",
              "--precision", "fp64"]
    extra = ["--average-momentum"] if momentum != "0" else []
    _, avg, _ = record(tmp_path, "avg", ["--interval", "1", *common, *extra])
    _, ga, _ = record(tmp_path, "ga", ["--algorithm", "gradient_allreduce", *common])
    for r in range(2):
        diff = (avg[r]["params"] - ga[r]["params"]).abs().max().item()
        assert diff < 1e-5, f"rank {r}: max |difference| {diff}"
    # Guard against a vacuous pass: the weights moved from their initial values.
    assert (avg[0]["params"] - avg[1]["params"]).abs().max() == 0


def test_smoke_run_writes_config_and_falling_loss(tmp_path):
    out = tmp_path / "runs"
    horovodrun(2, ["-m", "prsgd.train", "--preset", "smoke", "--dataset", "synthetic",
                   "--interval", "4", "--seed", "3", "--out", str(out), "--run-id", "smoke"],
               timeout=240, env={"HOROVOD_CYCLE_TIME": "0.5"})
    cfg, m = load_run(out / "smoke")
    assert cfg["provenance"]["horovod_env"]["HOROVOD_CYCLE_TIME"] == "0.5"   # the user's wins
    assert cfg["config"]["interval"] == 4 and cfg["provenance"]["world_size"] == 2
    assert cfg["provenance"]["dataset"]["name"] == "synthetic"
    assert cfg["provenance"]["versions"]["horovod"] == "0.28.1"
    assert len(m) == 3 and m["train_loss"].iloc[-1] < m["train_loss"].iloc[0]
    assert m["test_acc"].notna().all()


def test_smoke_on_shared_jpeg_copy(tmp_path, shared_data):
    out = tmp_path / "runs"
    horovodrun(2, ["-m", "prsgd.train", "--preset", "smoke", "--dataset", "imagefolder",
                   "--data", str(shared_data), "--train-subset", "1024", "--epochs", "3",
                   "--interval", "2", "--out", str(out), "--run-id", "jpeg"], timeout=900)
    cfg, m = load_run(out / "jpeg")
    assert cfg["provenance"]["dataset"]["name"] == "cifar10-jpeg-q75"
    assert m["train_loss"].iloc[-1] < m["train_loss"].iloc[0]
