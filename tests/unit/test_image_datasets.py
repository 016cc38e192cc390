"""Image dataset loaders: idx files (MNIST, Fashion-MNIST) and CIFAR-10 python batches on exact-format
fixtures, digest checks of the decompressed bytes, refused malformed files, the data-only unpickler, the
stratified validation split, and the real MNIST / Fashion-MNIST files when present."""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from har.datasets import images
from har.errors import BadDataError, BadOptionError, DataNotFoundError

DATA = Path(os.environ.get("HAR_DATA_DIR", "data"))


def _idx3(images_u8: np.ndarray) -> bytes:
    n, h, w = images_u8.shape
    return b"".join(int(v).to_bytes(4, "big") for v in (0x803, n, h, w)) + images_u8.tobytes()


def _idx1(labels: np.ndarray) -> bytes:
    return (0x801).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()


def _write_idx(folder: Path, n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        img_f, lab_f = images.IDX_FILES[split]
        (folder / img_f).write_bytes(gzip.compress(_idx3(imgs), mtime=0))
        (folder / lab_f).write_bytes(gzip.compress(_idx1(labels), mtime=0))
    return imgs, labels


def test_idx_fixture_loads_exactly(tmp_path):
    imgs, labels = _write_idx(tmp_path / "mnist")
    s = images.load_idx("mnist", "train", tmp_path / "mnist", check=False)
    assert s.images.shape == (20, 1, 28, 28) and s.images.dtype == np.uint8
    np.testing.assert_array_equal(s.images[:, 0], imgs)
    np.testing.assert_array_equal(s.labels, labels)


def test_digest_mismatch_and_malformed_idx_are_refused(tmp_path):
    _write_idx(tmp_path / "mnist")
    with pytest.raises(BadDataError, match="differs from the published one"):
        images.load("mnist", tmp_path, "train")  # fixture bytes are not the published files
    f = tmp_path / "bad" / images.IDX_FILES["train"][0]
    _write_idx(tmp_path / "bad")
    f.write_bytes(gzip.compress(_idx3(np.zeros((3, 28, 28), np.uint8))[:-5]))
    with pytest.raises(BadDataError, match="header says 3 x 28 x 28"):
        images.load_idx("mnist", "train", tmp_path / "bad", check=False)
    f.write_bytes(b"\x00\x00\x08\x01" + b"\0" * 12)
    with pytest.raises(BadDataError, match="magic"):
        images.load_idx("mnist", "train", tmp_path / "bad", check=False)
    f.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(BadDataError, match="corrupt gzip"):
        images.load_idx("mnist", "train", tmp_path / "bad", check=False)


def test_missing_files_and_unknown_names_are_one_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found in") as e:
        images.load("mnist", tmp_path, "train")
    assert "\n" not in str(e.value)
    with pytest.raises(BadOptionError, match="unknown image dataset"):
        images.load("svhn", tmp_path, "train")
    with pytest.raises(DataNotFoundError, match="cifar-10-python.tar.gz"):
        images.load("cifar10", tmp_path, "test")


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    # the official layout: uint8 array (n, 3072) in R, G, B planes, a list of int labels, bytes keys
    return {b"batch_label": b"training batch 1 of 5", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}


def test_cifar_batches_in_the_official_format_load(tmp_path):
    folder = tmp_path / images.CIFAR_DIR
    folder.mkdir()
    batches = {}
    for i, name in enumerate((*images.CIFAR_TRAIN, "test_batch")):
        batches[name] = _cifar_batch(7, i)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    train = images.load("cifar10", tmp_path, "train")
    assert train.images.shape == (35, 3, 32, 32) and len(train.classes) == 10
    np.testing.assert_array_equal(train.images[:7].reshape(7, -1), batches["data_batch_1"][b"data"])
    assert train.labels[7:14].tolist() == batches["data_batch_2"][b"labels"]
    assert len(images.load("cifar10", tmp_path, "test")) == 7


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_reader_never_builds_other_globals(tmp_path):
    f = tmp_path / "data_batch_1"
    f.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(BadDataError, match="refused to build"):
        images.read_cifar_batch(f)
    f.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, protocol=2))
    with pytest.raises(BadDataError, match="for 1 labels"):
        images.read_cifar_batch(f)


def test_validation_split_is_stratified_seeded_and_disjoint(tmp_path):
    imgs, labels = _write_idx(tmp_path / "m", n=200)
    s = images.load_idx("mnist", "train", tmp_path / "m", check=False)
    fit, val = images.split_validation(s, 50, seed=3)
    assert len(fit) + len(val) == 200 and np.bincount(val.labels).tolist() == [5] * 10
    fit2, val2 = images.split_validation(s, 50, seed=3)
    np.testing.assert_array_equal(val.images, val2.images)
    assert not set(map(bytes, fit.images.reshape(len(fit), -1))) & set(map(bytes, val.images.reshape(len(val), -1)))


@pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason="MNIST not under the data root")
def test_real_mnist_checks_pass():
    train, test = images.load("mnist", DATA, "train"), images.load("mnist", DATA, "test")
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist_checks_pass():
    if not (images.DEBIAN_FASHION.is_dir() or (DATA / "fashion-mnist" / images.IDX_FILES["train"][0]).is_file()):
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST images missing: apt-get install -y dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST images missing: apt-get install -y dataset-fashion-mnist")
    test = images.load("fashion-mnist", DATA, "test")
    assert np.bincount(test.labels).tolist() == [1000] * 10 and test.classes[9] == "Ankle boot"
