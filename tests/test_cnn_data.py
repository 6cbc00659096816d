"""cnn/data.py: the CIFAR, SVHN and Fashion-MNIST loaders on files written here, the digits split and
the random forget set."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_unlearn.cnn.data import DataError, forget_indices, make_split, read_idx


def _cifar_batch(path: Path, n: int, label_key: bytes, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: list(rng.integers(0, classes, n)),
    }
    path.write_bytes(pickle.dumps(batch))


def test_cifar10_loader_reads_python_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", 8, b"labels", 10, i)
    _cifar_batch(folder / "test_batch", 6, b"labels", 10, 9)
    split = make_split("cifar10", tmp_path, val_fraction=0.1, forget_ratio=0.25)
    assert split.x_train.shape == (36, 3, 32, 32) and len(split.y_val) == 4 and len(split.y_test) == 6
    assert len(split.forget) == 9 and len(split.retain) == 27
    raw = pickle.loads((folder / "test_batch").read_bytes())
    assert split.y_test.tolist() == raw[b"labels"]


def test_cifar100_loader_uses_fine_labels_and_names_a_missing_file(tmp_path):
    _cifar_batch(tmp_path / "train", 20, b"fine_labels", 100, 0)
    with pytest.raises(DataError, match="test: file not found"):
        make_split("cifar100", tmp_path)
    _cifar_batch(tmp_path / "test", 5, b"fine_labels", 100, 1)
    split = make_split("cifar100", tmp_path, val_fraction=0.0, forget_classes=(int(split_label(tmp_path)),))
    assert split.num_classes == 100 and len(split.y_train) == 20


def split_label(folder: Path) -> int:
    return pickle.loads((folder / "train").read_bytes())[b"fine_labels"][0]


def test_svhn_loader_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    rng = np.random.default_rng(0)
    for name, n in (("train", 12), ("test", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10]] + [[k % 9 + 1] for k in range(n - 1)], dtype=np.uint8)
        savemat(tmp_path / f"{name}_32x32.mat", {"X": x, "y": y})
    split = make_split("svhn", tmp_path, val_fraction=0.0, forget_ratio=0.25)
    assert split.x_test.shape == (4, 3, 32, 32)
    assert split.y_test.tolist() == [0, 1, 2, 3]


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_loader_reads_gzipped_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").tolist() == list(range(10))
    split = make_split("fashion_mnist", tmp_path, val_fraction=0.1, forget_ratio=0.1)
    assert split.x_train.shape == (27, 1, 28, 28) and split.y_test.tolist() == list(range(10))
    assert split.x_train.mean(dim=(0, 2, 3)).abs().item() < 1e-4  # normalised with train statistics


def test_digits_split_holds_out_a_test_set_and_forgets_whole_classes():
    split = make_split("digits", forget_classes=(3,))
    assert len(split.y_test) == round(1797 / 6)
    assert (split.y_train[split.forget] == 3).all() and (split.y_train[split.retain] != 3).all()
    with pytest.raises(DataError, match="forget_classes"):
        make_split("digits", forget_classes=(10,))


def test_random_forget_set_has_the_ratio_and_depends_on_seed():
    labels = torch.arange(200) % 10
    a, b = forget_indices(labels, 0.1, None, 0), forget_indices(labels, 0.1, None, 1)
    assert len(a) == 20 and len(set(labels[a].tolist())) > 1 and a.tolist() != b.tolist()
