"""The torch.distributed backend with real `torchrun` ranks: it equals real `horovodrun --gloo`
ranks in fp64 on Algorithm 1 and Hier-AVG, a killed run resumes bit-identically, and a launch
without torchrun is refused with one line. Both launchers run on this machine over loopback."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import ROOT, horovodrun, torchrun

pytestmark = pytest.mark.horovod


def _comm_results(out: Path, n: int) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(n)]


def test_every_collective_equals_horovods_and_the_arithmetic(tmp_path):
    """tests/comm_worker.py calls every collective of the Comm interface on 4 ranks (Hier-AVG's
    2 groups of 2 included), once under torchrun and once under horovodrun."""
    worker = str(ROOT / "tests" / "comm_worker.py")
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
        # Counted as Horovod counts: a round per call, bytes of the region when a group has 2+.
        assert a["counters"] == b["counters"] == {"rounds": {"global": 1, "local": 2},
                                                  "bytes": {"global": 8008, "local": 8008}}
