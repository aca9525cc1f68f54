"""A corrupted copy of the dataset (one byte changed, one file truncated) is refused before
training starts: exit 2, a message naming the file, no run directory."""
from __future__ import annotations

import contextlib
import io
import shutil

import pytest

from helpers import bad_inputs
from prsgd.data import sources as data_sources
from prsgd.train import main


def refuse(tmp_path, data_path, monkeypatch):
    monkeypatch.setenv("PRSGD_CACHE", str(tmp_path / "cache"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([*bad_inputs.BASE, "--dataset", "imagefolder", "--data", str(data_path),
                     "--out", str(tmp_path / "runs")])
    assert code == 2
    assert not (tmp_path / "runs").exists()   # refused before any run file was written
    return err.getvalue()


def test_small_zip_valid_then_one_byte_changed_then_truncated(tmp_path, monkeypatch):
    z = tmp_path / "ok" / "data.zip"
    bad_inputs.make_zip(z)
    monkeypatch.setenv("PRSGD_CACHE", str(tmp_path / "cache"))
    assert len(data_sources.imagefolder(str(z)).train_y) == 20      # the intact copy loads
    one = tmp_path / "one" / "data.zip"
    one.parent.mkdir()
    shutil.copy(z, one)
    bad_inputs.corrupt_one_byte(one)
    assert one.stat().st_size == z.stat().st_size            # same size: only a checksum sees it
    assert "fails its CRC check" in refuse(tmp_path, one, monkeypatch)
    cut = tmp_path / "cut" / "data.zip"
    cut.parent.mkdir()
    shutil.copy(z, cut)
    bad_inputs.truncate(cut)
    assert "not a readable zip" in refuse(tmp_path, cut, monkeypatch)


@pytest.mark.parametrize("spoil", ["one_byte_in_train", "truncated_test"])
def test_corrupted_copy_of_the_shared_dataset(tmp_path, monkeypatch, shared_data, spoil):
    copy = tmp_path / "cifar10-jpeg"
    copy.mkdir()
    for name in ("train.zip", "test.zip"):
        shutil.copy(shared_data / name, copy / name)
    if spoil == "one_byte_in_train":
        raw = bytearray((copy / "train.zip").read_bytes())
        raw[len(raw) // 2] ^= 0x01
        (copy / "train.zip").write_bytes(bytes(raw))
        expect = "train.zip"
    else:
        bad_inputs.truncate(copy / "test.zip", 0.9)
        expect = "test.zip: not a readable zip"
    msg = refuse(tmp_path, copy, monkeypatch)
    assert expect in msg and ("corrupted" in msg or "truncated" in msg), msg
