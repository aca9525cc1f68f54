"""Where a dataset comes from: the official CIFAR-10 (download, md5 checks), an ImageFolder tree or
zip (zip and checksum checks, JPEG/PNG decoding), or `synthetic` (seeded random images whose labels
are learnable). Decoded arrays are cached under $PRSGD_CACHE/data keyed by the source's checksum,
so a second run starts at once; decoding the first time says what it is doing (stderr).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from prsgd.data.dataset import NUM_CLASSES, DataError, Dataset

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
# Checksums of known copies. A zip is held to its known checksum only when it is that copy: its
# folder's README (or the README beside that folder, as in shared/data/) quotes the checksum. A
# user's own zip that happens to be called train.zip is CRC-checked like any other.
KNOWN_SHA256 = {
    # ../shared/data/cifar10-jpeg (JPEG quality 75 re-encoding of CIFAR-10; see its README)
    "train.zip": "7535619d681ecae959b6925f0fac250eda93d92f637e12d065098d49ceaebdd4",
    "test.zip": "c85d24bcf53f877447467edb08f30fc388d175fa00514667e43491e557f53606",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def cache_dir() -> Path:
    return Path(os.environ.get("PRSGD_CACHE", Path.home() / ".cache" / "prsgd")) / "data"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


# --- synthetic -----------------------------------------------------------------------------------
def synthetic(n_train: int = 2048, n_test: int = 512, seed: int = 0) -> Dataset:
    """Class prototypes plus noise: random-looking images whose labels a ResNet learns quickly."""
    g = torch.Generator().manual_seed(1234 + seed)
    protos = torch.randint(0, 256, (10, 3, 32, 32), generator=g, dtype=torch.int32)

    def draw(n):
        y = torch.randint(0, 10, (n,), generator=g)
        noise = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.int32)
        x = (protos[y] * 3 + noise * 2) // 5
        return x.to(torch.uint8), y

    tx, ty = draw(n_train)
    vx, vy = draw(n_test)
    return Dataset(tx, ty, vx, vy, "synthetic", f"synthetic(n_train={n_train}, seed={seed})",
                   hashlib.sha256(f"synthetic-v1-{n_train}-{n_test}-{seed}".encode()).hexdigest())


# --- official CIFAR-10 ---------------------------------------------------------------------------
def _read_batches(folder: Path) -> tuple[np.ndarray, ...]:
    missing = [name for name in CIFAR_BATCH_MD5 if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}; expected the official "
                        "cifar-10-batches-py")
    for name, md5 in CIFAR_BATCH_MD5.items():
        f = folder / name
        if md5_file(f) != md5:
            raise DataError(f"{f}: md5 mismatch (corrupted or not the official file)")

    def load(name):
        with open(folder / name, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        return (np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32),
                np.asarray(d[b"labels"], np.int64))

    parts = [load(f"data_batch_{i}") for i in range(1, 6)]
    tx = np.concatenate([p[0] for p in parts])
    ty = np.concatenate([p[1] for p in parts])
    vx, vy = load("test_batch")
    return tx, ty, vx, vy


def official_cifar10(path: str) -> Dataset:
    folder = Path(path) if path else cache_dir() / "cifar-10-batches-py"
    if folder.is_dir() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir() and not path:
        _download_official(folder.parent)
    if not folder.is_dir():
        raise DataError(f"--data: {folder} is not a cifar-10-batches-py folder")
    tx, ty, vx, vy = _read_batches(folder)
    digest = hashlib.sha256("".join(CIFAR_BATCH_MD5.values()).encode()).hexdigest()
    return Dataset(torch.from_numpy(tx), torch.from_numpy(ty), torch.from_numpy(vx),
                   torch.from_numpy(vy), "cifar10-official", str(folder), digest)


def _download_official(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tgz = dest / "cifar-10-python.tar.gz"
    try:
        if not tgz.exists():
            tmp = tgz.with_suffix(".part")
            urllib.request.urlretrieve(CIFAR_URL, tmp)
            tmp.rename(tgz)
    except OSError as e:
        raise DataError(
            f"CIFAR-10 could not be downloaded ({e.__class__.__name__}: {e}).\n"
            "Supply it yourself, one of:\n"
            "  --dataset cifar10 --data DIR            (DIR holds the official cifar-10-batches-py)\n"
            "  --dataset imagefolder --data PATH       (an ImageFolder tree or zip, e.g. the\n"
            "                                           shared JPEG copy: ../shared/data/cifar10-jpeg)\n"
            "  make ... DATA=PATH                      (the same, through make)") from None
    if md5_file(tgz) != CIFAR_TGZ_MD5:
        tgz.unlink()
        raise DataError(f"{CIFAR_URL}: md5 mismatch; the download was removed, try again")
    with tarfile.open(tgz) as t:
        t.extractall(dest, filter="data")


# --- ImageFolder tree or zip ---------------------------------------------------------------------
def _split_sources(path: Path) -> dict[str, tuple[Path, str]]:
    """Map split -> (container, prefix). A container is a folder or a zip file."""
    if path.is_file() and path.suffix == ".zip":
        if path.name in ("train.zip", "test.zip") and (path.parent / "test.zip").exists():
            path = path.parent
        else:
            return {"train": (path, "train/"), "test": (path, "test/")}
    if not path.is_dir():
        raise DataError(f"--data: {path} does not exist (expected an ImageFolder tree or a zip)")
    out = {}
    for split in ("train", "test"):
        if (path / f"{split}.zip").is_file():
            out[split] = (path / f"{split}.zip", f"{split}/")
        elif (path / split).is_dir():
            out[split] = (path / split, "")
        else:
            raise DataError(f"--data: {path} has neither {split}.zip nor {split}/")
    return out


def _claimed_sha256(zpath: Path) -> str | None:
    """The known sha256 this zip claims to have: the shared copy's README quotes it."""
    known = KNOWN_SHA256.get(zpath.name)
    if not known:
        return None
    for folder in (zpath.parent, zpath.parent.parent):
        try:
            if known in (folder / "README.md").read_text(errors="replace"):
                return known
        except OSError:
            continue
    return None


def _verify_zip(zpath: Path) -> None:
    known = _claimed_sha256(zpath)
    try:
        with zipfile.ZipFile(zpath) as z:
            bad = z.testzip()  # CRC of every member: catches a changed byte anywhere
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # deflate errors too
        raise DataError(f"{zpath}: not a readable zip ({e}); the copy is truncated or corrupted")
    if bad is not None:
        raise DataError(f"{zpath}: member {bad} fails its CRC check; the copy is corrupted")
    if known and sha256_file(zpath) != known:
        raise DataError(f"{zpath}: sha256 differs from the known copy's ({known[:12]}...); "
                        "the file was changed or truncated")


def _read_file(f: Path) -> bytes:
    """A file of an image tree, or DataError naming it (a dangling symlink, no permission...)."""
    try:
        return f.read_bytes()
    except OSError as e:
        why = "a dangling symlink" if f.is_symlink() and not f.exists() else (e.strerror or e)
        raise DataError(f"{f}: cannot be read ({why})") from None


def _image_names(container: Path, prefix: str) -> list[tuple[str, str]]:
    """(name, class) of every image of a split, sorted; no image is read."""
    items = []
    if container.suffix == ".zip":
        with zipfile.ZipFile(container) as z:
            for name in sorted(z.namelist()):
                rel = name[len(prefix):] if name.startswith(prefix) else None
                if rel and rel.lower().endswith(IMAGE_SUFFIXES) and "/" in rel:
                    items.append((name, rel.split("/")[0]))
    else:
        for f in sorted(container.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                items.append((str(f), f.relative_to(container).as_posix().split("/")[0]))
    if not items:
        raise DataError(f"{container}: no images under {prefix or '.'}<class>/")
    return items


def check_classes(sources: dict, path) -> list[str]:
    """The class names (sorted; label i = i-th name), the same in both splits, 2..NUM_CLASSES
    of them: labels are indices into this one list, so a test split with another set of
    classes would silently shift them, and the model has NUM_CLASSES outputs."""
    names = {split: sorted({c for _, c in _image_names(*src)}) for split, src in sources.items()}
    train, test = names["train"], names["test"]
    where = f"--data: {path}"
    if train != test:
        only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
        raise DataError(f"{where}: the test split's classes differ from the train split's "
                        f"(only in train: {', '.join(only_train) or '-'}; only in test: "
                        f"{', '.join(only_test) or '-'})")
    if len(train) < 2:
        raise DataError(f"{where}: {len(train)} class ({', '.join(train)}); classification "
                        "needs at least 2")
    if len(train) > NUM_CLASSES:
        raise DataError(f"{where}: {len(train)} classes, more than the model's {NUM_CLASSES} "
                        "outputs")
    return train


def _decode_split(container: Path, prefix: str, classes: list[str] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # pillow; torchvision is not needed

    items: list[tuple[str, str, bytes]] = []
    names = _image_names(container, prefix)
    if container.suffix == ".zip":
        with zipfile.ZipFile(container) as z:
            items = [(name, c, z.read(name)) for name, c in names]
    else:
        items = [(name, c, _read_file(Path(name))) for name, c in names]
    classes = classes or sorted({c for _, c, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    x = np.empty((len(items), 3, 32, 32), np.uint8)
    y = np.empty(len(items), np.int64)
    say = _Say(f"decoding {len(items)} images of {container} ({prefix or 'all'})", len(items))
    for i, (name, cls, raw) in enumerate(items):
        say.progress(i)
        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.load()
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises several types for truncated / corrupt files
            raise DataError(f"{name}: cannot decode image ({e}); the copy is corrupted") from None
        if arr.shape != (32, 32, 3):
            raise DataError(f"{name}: image is {arr.shape[1]}x{arr.shape[0]}, expected 32x32")
        x[i] = arr.transpose(2, 0, 1)
        y[i] = index[cls]
    say.done()
    return x, y


class _Say:
    """Lines on stderr about a long preparation: its start, a line every `every_s` seconds with
    how far it got, its end with the time it took. One line each (greppable, no carriage
    returns)."""

    def __init__(self, what: str, total: int, every_s: float = 10.0):
        self.what, self.total, self.every_s = what, total, every_s
        self.t0 = self.last = time.monotonic()
        print(f"data: {what} (once: the result is cached)", file=sys.stderr, flush=True)

    def progress(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            print(f"data: {done}/{self.total} decoded, {now - self.t0:.0f} s", file=sys.stderr,
                  flush=True)

    def done(self) -> None:
        print(f"data: {self.total} images decoded in {time.monotonic() - self.t0:.1f} s",
              file=sys.stderr, flush=True)


def imagefolder(path: str) -> Dataset:
    sources = _split_sources(Path(path).expanduser().resolve())
    h = hashlib.sha256()
    known = True   # every container is a known copy, by its checksum
    for split, (container, prefix) in sources.items():
        if container.suffix == ".zip":
            _verify_zip(container)
            sha = sha256_file(container)
            known &= sha == KNOWN_SHA256.get(container.name)
            h.update(sha.encode())
        else:
            known = False
            for f in sorted(container.rglob("*")):
                if f.is_file() or f.is_symlink():   # a dangling link is named, not skipped
                    h.update(f.relative_to(container).as_posix().encode())
                    h.update(hashlib.sha256(_read_file(f)).digest())
    digest = h.hexdigest()
    classes = check_classes(sources, path)
    name = "cifar10-jpeg-q75" if known else "imagefolder"
    cached = cache_dir() / f"imagefolder-{digest[:20]}.npz"
    if cached.is_file():
        try:
            with np.load(cached) as z:
                arrays = [z[k] for k in ("tx", "ty", "vx", "vy")]
        except Exception:
            cached.unlink(missing_ok=True)  # a broken cache is rebuilt, never trusted
            return imagefolder(path)
    else:
        tx, ty = _decode_split(*sources["train"], classes)
        vx, vy = _decode_split(*sources["test"], classes)
        arrays = [tx, ty, vx, vy]
        cached.parent.mkdir(parents=True, exist_ok=True)
        # not records' atomic write: groups of an MPI sweep may fill the same cache at once, so
        # each process writes its own tmp file (np.savez also insists on the .npz suffix)
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, tx=tx, ty=ty, vx=vx, vy=vy)
        os.replace(tmp, cached)
    tx, ty, vx, vy = (torch.from_numpy(a) for a in arrays)
    return Dataset(tx, ty, vx, vy, name, str(Path(path)), digest)


def check_generated_size(train: int, test: int, bytes_each: int) -> None:
    """Generated data must fit in memory (with room for the generator's int32 temporaries)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    for flag, n in (("--train-subset", train), ("--test-subset", test)):
        need = n * bytes_each
        if need > memory // 2:
            raise DataError(f"{flag}: {n} generated samples need about {need / 2**30:.0f} GiB, "
                            "more than half of this machine's memory")
