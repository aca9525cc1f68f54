"""Unit tests without processes: model, data path, sharding, config (issue 2)."""
import io
import subprocess
import zipfile

import numpy as np
import pytest

from conftest import run_python
from prsgd.data import dataset as data


def _write_imagefolder_zip(path, per_class=2):
    from PIL import Image
    with zipfile.ZipFile(path, "w") as z:
        for split in ("train", "test"):
            for c in data.CLASSES[:3]:
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(buf, "PNG")
                    z.writestr(f"{split}/{c}/{i:04d}.png", buf.getvalue())


@pytest.mark.parametrize("args, flag", [
    (["--interval", "0"], "--interval"),
    (["--interval", "-3"], "--interval"),
    (["--preset", "nope"], "--preset"),
    (["--batch-size", "4096"], "--batch-size"),
    (["--algorithm", "sgd9"], "--algorithm"),
])
def test_bad_input_exits_nonzero_naming_the_flag(tmp_path, args, flag):
    proc = run_python(["-m", "prsgd.train", "--preset", "smoke", "--backend", "packed",
                       "--workers", "2", "--out", str(tmp_path), *args], check=False,
                      timeout=120)
    assert proc.returncode != 0
    assert flag in proc.stderr, proc.stderr
    assert not list(tmp_path.rglob("metrics.csv"))


def test_non_integer_interval_is_rejected_by_the_parser():
    proc = run_python(["-m", "prsgd.train", "--interval", "2.5"], check=False)
    assert proc.returncode == 2 and "--interval" in proc.stderr


def test_horovod_build_has_pytorch_and_gloo():
    import shutil
    from conftest import subprocess_env
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    out = subprocess.run([exe, "--check-build"], capture_output=True, text=True, timeout=120,
                         env=subprocess_env()).stdout
    assert "[X] PyTorch" in out and "[X] Gloo" in out, out
