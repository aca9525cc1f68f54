"""Resources checked up front (issue 21 §5): a packed run whose replicas cannot fit in memory is
refused in one line before anything is allocated or written, instead of being OOM-killed."""
import torch

from prsgd.core import memory
from prsgd.core.models import ResNet20

SMALL = ["--preset", "smoke", "--backend", "packed", "--workers", "64", "--train-subset", "512",
         "--test-subset", "32", "--batch-size", "8", "--epochs", "1", "--progress", "false"]


def test_a_packed_run_beyond_the_available_memory_is_refused_in_one_line(tmp_path, capsys,
                                                                         monkeypatch):
    from prsgd.train import main
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**30)     # 1 GiB left
    code = main([*SMALL, "--out", str(tmp_path), "--run-id", "big"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("prsgd.train: error: --workers: 64 packed workers need about "), err
    assert err[0].endswith("more than the 1.0 GiB available on cpu"), err
    assert not (tmp_path / "big").exists()


def test_the_estimate_counts_state_and_what_autograd_keeps_per_image():
    single, x = ResNet20(1), torch.zeros(1, 3, 32, 32)
    floats = sum(t.numel() for t in (*single.parameters(), *single.buffers()))
    per_image = memory.saved_bytes_per_image(single, x)
    # at least every conv's output of one image is kept (16x32x32 at the stem alone)
    assert per_image > 16 * 32 * 32 * 4
    one = memory.estimate_bytes(single, x, replicas=1, batch=8, itemsize=4)
    assert one == floats * 4 * memory.STATE_COPIES + 8 * per_image
    assert memory.estimate_bytes(single, x, replicas=10, batch=8, itemsize=4) == 10 * one
    assert memory.estimate_bytes(single, x, replicas=1, batch=8, itemsize=8) == 2 * one


def test_the_check_leaves_the_seeded_initialisation_alone(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**50)
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    memory.check_replicas_fit(lambda: ResNet20(1), torch.zeros(4, 3, 32, 32), replicas=2,
                              workers=2, runs=1, batch=8, itemsize=4, device=torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), before)
