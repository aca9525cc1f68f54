"""The clock model (prsgd.clock): pure arithmetic against hand-computed values, the fit, the
per-level costs of Hier-AVG, calibration files and the command line. No timing anywhere."""
import json

import pytest

from conftest import run_python, toy_clock_run
from prsgd.clock.collectives import ring_allreduce_seconds
from prsgd.clock.model import KIND, Calibration
from prsgd.clock.calibrate import network_doc


def test_network_doc_takes_the_slowest_rank_and_fits_each_level():
    alpha, bw = 1e-4, 1e8
    raw = []
    for rank in range(4):
        for level, n, a, b in (("inter", 4, alpha, bw), ("intra", 2, 1e-5, 1e9)):
            for nbytes in (1e4, 1e5, 1e6):
                t = ring_allreduce_seconds(n, nbytes, a, b) + 5e-4
                raw.append({"level": level, "n": n, "bytes": nbytes, "rank": rank,
                            "seconds": [t * (0.5 if rank else 1.0)] * 3})   # rank 0 slowest
    doc = network_doc([raw], levels={"inter": [[0, 1, 2, 3]], "intra": [[0, 1], [2, 3]]},
                      hosts=["a", "a", "b", "b"], cycle_ms=1.0, overhead=5e-4)
    net = doc["network"]
    assert net["ranks_per_node"] == 2 and net["nodes"] == 2
    assert net["levels"]["inter"]["bandwidth_Bps"] == pytest.approx(bw)
    assert net["levels"]["intra"]["alpha_s"] == pytest.approx(1e-5)
    c = Calibration.from_dict(dict(doc, name="lab"))
    assert c.collective_seconds((0, 1, 2, 3), 1e6) == pytest.approx(
        5e-4 + ring_allreduce_seconds(4, 1e6, alpha, bw))


def test_predict_and_combine_commands(tmp_path):
    rows = [{"epoch": 1, "step": 40, "train_seconds": 5.0, "rounds": 10, "rounds_local": 0,
             "bytes": 1e7, "bytes_local": 0}]
    d, _ = toy_clock_run(tmp_path, rows)
    compute = tmp_path / "compute.json"
    compute.write_text(json.dumps({"kind": KIND, "compute": {"seconds_per_step": 0.1}}))
    out = tmp_path / "cal.json"
    p = run_python(["-m", "prsgd.clock", "combine", "--compute", str(compute), "--network",
                    "preset:25gbe", "--name", "t", "--out", str(out)])
    assert p.returncode == 0 and Calibration.load(out).links["inter"].bandwidth_Bps > 2e9
    p = run_python(["-m", "prsgd.clock", "predict", str(d), "--clock", str(out)])
    assert "run" in p.stdout and "%" in p.stdout
    # bad input: one line, exit 2, nothing written
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    p = run_python(["-m", "prsgd.clock", "predict", str(d), "--clock", str(bad)], check=False)
    assert p.returncode == 2 and "not a clock calibration" in p.stderr
    p = run_python(["-m", "prsgd.clock", "combine", "--compute", str(compute), "--network",
                    "preset:10gbe", "--name", "t", "--out", str(tmp_path / "x.json")], check=False)
    assert p.returncode == 2 and "no network preset" in p.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.horovod
@pytest.mark.slow
def test_calibrate_commands_under_horovodrun(tmp_path):
    """Real ranks: calibrate-network fits a level from real allreduces, calibrate-compute times
    the trainer's step on every rank at once; both files load as calibrations."""
    from conftest import horovodrun
    net, comp = tmp_path / "net.json", tmp_path / "compute.json"
    # sizes far apart: on a busy shared machine the time must still grow with the size
    sizes = (4096, 1084392, 33554432)
    horovodrun(2, ["-m", "prsgd.clock", "calibrate-network", "--sizes", ",".join(map(str, sizes)),
                   "--repeats", "3", "--warmup", "1", "--note", "loopback", "--allgather",
                   "--out", str(net)])
    doc = json.loads(net.read_text())["network"]
    assert doc["hosts"] == [doc["hosts"][0]] * 2 and doc["ranks_per_node"] == 2
    for collective in ("allreduce", "allgather"):      # --allgather: Horovod's allgather too
        assert {p["bytes"] for p in doc["points"] if p["collective"] == collective} == set(sizes)
    assert all(p["repeats"] == 3 and p["n"] == 2 for p in doc["points"])
    level = doc["levels"]["intra"]          # one host: the only level is inside the node
    assert level["bandwidth_Bps"] > 0 and level["alpha_s"] >= 0 and level["fit"]["points"] == 3
    gather = level["collectives"]["allgather"]
    assert gather["bandwidth_Bps"] > 0 and gather["fit"]["points"] == 3
    assert doc["provenance"]["versions"]["horovod"] and doc["overhead_s"] == 0.0005
    horovodrun(2, ["-m", "prsgd.clock", "calibrate-compute", "--steps", "2", "--warmup", "1",
                   "--batch-size", "8", "--codecs", "int8,topk:0.01", "--codec-repeats", "2",
                   "--out", str(comp)])
    c = json.loads(comp.read_text())["compute"]
    assert len(c["per_rank_seconds_per_step"]) == 2 and c["ranks"] == 2
    codecs = c["codecs"]["per_compressor"]          # every rank timed every compressor at once
    assert c["codecs"]["workers"] == 2 and list(codecs) == ["int8/1024", "top-0.01"]
    assert all(len(d["per_rank"]) == 2 and d["encode_s"] == max(r["encode_s"] for r in
                                                                d["per_rank"]) for d in codecs.values())
    assert c["seconds_per_step"] == max(c["per_rank_seconds_per_step"]) > 0
    out = tmp_path / "cal.json"
    run_python(["-m", "prsgd.clock", "combine", "--compute", str(comp), "--network", str(net),
                "--name", "loopback", "--out", str(out)])
    cal = Calibration.load(out)
    assert cal.compute_per_rank and cal.collective_seconds((0, 1), 1e6) > cal.overhead_s


@pytest.mark.horovod
def test_calibrate_network_under_torchrun(tmp_path):
    """The clock calibrates through the backends' Comm, so torchrun's ranks calibrate it too
    (torch.distributed all_reduce between 2 ranks, tiny sizes)."""
    from conftest import torchrun
    net = tmp_path / "net.json"
    sizes = (4096, 1048576, 16777216)   # far apart: the time grows with the size even here
    torchrun(2, ["-m", "prsgd.clock", "calibrate-network", "--sizes", ",".join(map(str, sizes)),
                 "--repeats", "3", "--warmup", "1", "--note", "loopback", "--allgather",
                 "--out", str(net)])
    doc = json.loads(net.read_text())["network"]
    assert doc["backend"] == "torchdist" and doc["ranks_per_node"] == 2 and doc["nodes"] == 1
    assert {(p["collective"], p["bytes"]) for p in doc["points"]} == \
        {(c, b) for c in ("allreduce", "allgather") for b in sizes}
    assert all(p["repeats"] == 3 and p["n"] == 2 and p["mean_s"] > 0 for p in doc["points"])
    assert doc["overhead_s"] == 0.0 and doc["cycle_time_ms"] == 0.0   # no Horovod cycle
    assert list(doc["levels"]) == ["intra"]


def test_calibrate_network_refuses_to_run_alone(tmp_path):
    p = run_python(["-m", "prsgd.clock", "calibrate-network", "--out", str(tmp_path / "n.json")],
                   check=False)
    assert p.returncode == 2 and "horovodrun" in p.stderr and not (tmp_path / "n.json").exists()
