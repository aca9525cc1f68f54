"""Unit tests without processes: model, data path, sharding, config (issue 2)."""
import io
import zipfile

import numpy as np
import pytest
import torch

from conftest import ROOT
from prsgd.core import config
from prsgd.data import dataset as data
from prsgd.data import plan as data_plan
from prsgd.data import sources as data_sources
from prsgd.core import models
from prsgd.core.flat import FlatModel


def test_resnet20_has_269722_parameters():
    assert sum(p.numel() for p in models.ResNet20().parameters()) == 269_722


def test_packed_replicas_compute_exactly_their_own_network():
    torch.manual_seed(0)
    n = 3
    singles = [models.ResNet20() for _ in range(n)]
    packed = models.ResNet20(replicas=n)
    state = {k: torch.cat([s.state_dict()[k].reshape(1, -1) if v.dim() else
                           s.state_dict()[k].unsqueeze(0) for s in singles]).reshape(v.shape)
             if v.dim() else v for k, v in packed.state_dict().items()}
    packed.load_state_dict(state)
    for r, s in enumerate(singles):
        assert all(torch.equal(a, b) for a, b in zip(
            models.replica_state(packed.state_dict(), n, r).values(), s.state_dict().values()))
    x = torch.randn(4, 3 * n, 32, 32)
    for m in [packed, *singles]:
        m.train()
    out = packed(x)
    for r, s in enumerate(singles):
        assert torch.allclose(out[:, r], s(x[:, 3 * r:3 * r + 3])[:, 0], atol=1e-5)
        # BatchNorm running statistics were updated per replica, from that replica's batch only.
        assert all(torch.allclose(a.float(), b.float(), atol=1e-6) for a, b in zip(
            models.replica_state(packed.state_dict(), n, r).values(), s.state_dict().values()))


def test_flat_model_views_share_memory_and_sgd_matches_torch():
    torch.manual_seed(1)
    a, b = models.ResNet20(), models.ResNet20()
    b.load_state_dict(a.state_dict())
    fm = FlatModel(a)
    assert fm.num_params == 269_722
    assert all(p.data_ptr() >= fm.flat.data_ptr() for p in a.parameters())
    opt = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(3):
        fm.zero_grad()
        torch.nn.functional.cross_entropy(a(x)[:, 0], y).backward()
        fm.sgd_step(0.1, 0.9, 1e-4)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(b(x)[:, 0], y).backward()
        opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_shards_are_disjoint_cover_and_follow_distributed_sampler():
    perm = data_plan.epoch_permutation(103, seed=4, epoch=2)
    shards = [data_plan.shard(perm, w, 4) for w in range(4)]
    assert all(len(s) == 26 for s in shards)
    assert set(torch.cat(shards).tolist()) == set(range(103))
    # Only DistributedSampler's wrap-around padding repeats samples: 4*26 - 103 = 1.
    assert len(torch.cat(shards)) - len(set(torch.cat(shards).tolist())) == 1
    sampler = torch.utils.data.DistributedSampler(range(103), num_replicas=4, rank=2,
                                                  shuffle=False)
    assert list(sampler) == data_plan.shard(torch.arange(103), 2, 4).tolist()
    assert not torch.equal(perm, data_plan.epoch_permutation(103, seed=4, epoch=3))


def test_device_augmentation_is_crop_of_zero_padding_then_flip():
    imgs = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    dd = data_plan.DeviceData(imgs, torch.arange(5), torch.device("cpu"))
    index = torch.tensor([[0, 3], [4, 1]])        # 2 workers, batch 2
    oy, ox = torch.tensor([[0, 8], [4, 2]]), torch.tensor([[8, 0], [4, 7]])
    flip = torch.tensor([[False, True], [True, False]])
    x, y = dd.batch(index, oy, ox, flip)
    assert x.shape == (2, 6, 32, 32) and y.tolist() == [[0, 4], [3, 1]]
    padded = torch.nn.functional.pad(imgs, (4, 4, 4, 4))
    for w in range(2):
        for b in range(2):
            i, r, c = index[w, b], oy[w, b], ox[w, b]
            want = padded[i, :, r:r + 32, c:c + 32]
            if flip[w, b]:
                want = want.flip(-1)
            got = x[b, 3 * w:3 * w + 3]
            assert torch.allclose(got, data_plan.normalize(want[None])[0])


def _write_imagefolder_zip(path, per_class=2):
    from PIL import Image
    with zipfile.ZipFile(path, "w") as z:
        for split in ("train", "test"):
            for c in data.CLASSES[:3]:
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(buf, "PNG")
                    z.writestr(f"{split}/{c}/{i:04d}.png", buf.getvalue())


def test_imagefolder_zip_is_read_and_corruption_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("PRSGD_CACHE", str(tmp_path / "cache"))
    zpath = tmp_path / "tiny.zip"
    _write_imagefolder_zip(zpath)
    ds = data.load("imagefolder", str(zpath))
    assert ds.train_x.shape == (6, 3, 32, 32) and sorted(ds.train_y.tolist()) == [0, 0, 1, 1, 2, 2]
    assert ds.name == "imagefolder"
    raw = bytearray(zpath.read_bytes())
    raw[200] ^= 0xFF                            # flip one byte inside the first member
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="corrupt|CRC|readable"):
        data.load("imagefolder", str(bad))
    truncated = tmp_path / "trunc.zip"
    truncated.write_bytes(zpath.read_bytes()[: len(raw) // 2])
    with pytest.raises(data.DataError):
        data.load("imagefolder", str(truncated))


def test_config_cli_spellings_and_presets():
    cfg = config.from_args(["--preset", "smoke", "--dataset", "synthetic", "--interval", "4",
                            "--seed", "3", "--out", "/x", "--lr-milestones", "1,2",
                            "--average-momentum"])
    assert (cfg.preset, cfg.interval, cfg.seed, cfg.out) == ("smoke", 4, 3, "/x")
    assert cfg.lr_milestones == (1, 2) and cfg.average_momentum is True
    paper = config.preset("paper")
    assert (paper.batch_size, paper.lr, paper.momentum, paper.epochs) == (32, 0.1, 0.9, 300)
    assert paper.lr_milestones == (150, 275)
    assert config.Config.from_dict(cfg.to_dict()) == cfg


def _requirement_name(spec: str) -> str:
    import re
    return re.split(r"[=<>\[ ;#]", spec.strip())[0].lower()


def test_environment_yml_names_the_pyproject_dependencies():
    """environment.yml makes the environment that pyproject.toml describes, plus what pip cannot
    give: OpenMPI with its C++ wrapper (mpi4py and Horovod's MPI), the compilers, Jupyter.

    conda itself is not reachable from the machines these tests run on, so `conda env create`
    is not run here: this reads the file as conda would and checks what it asks for."""
    import tomllib
    import yaml
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_names = {_requirement_name(d) for d in conda}
    pip_names = {_requirement_name(d) for d in pip if not d.startswith("-e")}
    # every Python dependency, in one of the two sections; nothing that pyproject lacks
    want = {_requirement_name(s) for s in py["dependencies"] + py["optional-dependencies"]["test"]}
    toolchain = {"python", "pip", "cmake", "make", "cxx-compiler", "openmpi", "openmpi-mpicxx",
                 "jupyterlab"}
    assert (conda_names - toolchain) | pip_names == want
    assert not (conda_names & pip_names), "a package from both conda and pip"
    # MPI: OpenMPI with mpicxx (Horovod's build looks for it), mpi4py built against it (conda)
    assert {"openmpi", "openmpi-mpicxx", "mpi4py", "cxx-compiler", "cmake"} <= conda_names
    assert "jupyterlab" in conda_names and "ipykernel" in pip_names
    # the same torch as pyproject's pin (Horovod's build key names it)
    torch_pin = next(s for s in py["dependencies"] if s.startswith("torch"))
    assert torch_pin in pip
    # the package itself: `-e .` relative to the file, i.e. this repository
    editable = [d for d in pip if d.startswith("-e")]
    assert [d.split()[1] for d in editable] == ["."]
    assert py["name"] == "prsgd" and (ROOT / "environment.yml").parent == ROOT
    # named for GPU users / the build script, not installed
    yml = (ROOT / "environment.yml").read_text()
    for extra in ("torchvision", "horovod"):
        assert extra in yml


def test_official_cifar_folder_with_wrong_files_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in data_sources.CIFAR_BATCH_MD5:
        (folder / name).write_bytes(b"not the official file")
    with pytest.raises(data.DataError, match="md5 mismatch"):
        data.load("cifar10", str(folder))
    (folder / "test_batch").unlink()
    with pytest.raises(data.DataError, match="missing test_batch"):
        data.load("cifar10", str(tmp_path))
