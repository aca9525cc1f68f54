"""A dataset: CIFAR-10 (or a stand-in) as uint8 tensors, and `load`, which gets one from its source.

Sources (data/sources.py): the official `cifar-10-batches-py` folder (downloaded and md5-checked
where the network allows), an ImageFolder tree or a zip of one, or `synthetic`. How an epoch's
batches are drawn from a dataset is data/plan.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
NUM_CLASSES = len(CLASSES)   # outputs of the models (ResNet20's last layer)


SUBSET_SEED = 1234   # --train-subset/--test-subset pick the same images in every run


class DataError(RuntimeError):
    """Missing, unreadable or corrupted data; the message says what to do."""


@dataclass
class Dataset:
    train_x: torch.Tensor   # (M, 3, 32, 32) uint8
    train_y: torch.Tensor   # (M,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str               # e.g. cifar10-official, cifar10-jpeg-q75, imagefolder, synthetic
    source: str             # path or description
    checksum: str           # sha256 of the source files (or of the generator's parameters)

    def subset(self, train: int, test: int) -> "Dataset":
        """A fixed random subset (the same for every run and seed). Not the first n images: an
        ImageFolder copy is sorted by class, so its first 8192 images are two classes only."""
        tx, ty, vx, vy = self.train_x, self.train_y, self.test_x, self.test_y

        def pick(n: int, size: int) -> torch.Tensor:
            g = torch.Generator().manual_seed(SUBSET_SEED)
            return torch.randperm(size, generator=g)[:n].sort().values

        if train and train < len(ty):
            i = pick(train, len(ty))
            tx, ty = tx[i], ty[i]
        if test and test < len(vy):
            i = pick(test, len(vy))
            vx, vy = vx[i], vy[i]
        return Dataset(tx, ty, vx, vy, self.name, self.source, self.checksum)


def load(dataset: str, path: str = "", train_subset: int = 0, test_subset: int = 0,
         seed: int = 0) -> Dataset:
    from prsgd.data import sources   # the loaders import this module's Dataset
    if dataset == "synthetic":
        sources.check_generated_size(train_subset, test_subset, 3 * 32 * 32 * 9)   # uint8 + 2 int32
        return sources.synthetic(train_subset or 2048, test_subset or 512, seed)
    if dataset == "synthetic_logreg":  # feature vectors, not images (features.py, stich.py)
        from prsgd.data.features import DIM, synthetic_logreg
        sources.check_generated_size(train_subset, test_subset, 8 * DIM * 3)
        return synthetic_logreg(train_subset or 8192, test_subset or 1024, seed)
    if dataset == "cifar10":
        ds = sources.official_cifar10(path)
    elif dataset == "imagefolder":
        ds = sources.imagefolder(path)
    else:
        raise DataError(f"--dataset: unknown dataset {dataset!r}")
    for flag, n, have, split in (("--train-subset", train_subset, len(ds.train_y), "training"),
                                 ("--test-subset", test_subset, len(ds.test_y), "test")):
        if n > have:
            raise DataError(f"{flag}: {n} is more than the {have} {split} images of "
                            f"{ds.source}")
    return ds.subset(train_subset, test_subset)
