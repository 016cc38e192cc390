"""Image classification datasets for the graph path: MNIST, Fashion-MNIST (idx files) and CIFAR-10
(official python batches), with the published test sets held out and a validation split from train.

Steps of `load(name, root)`:
1. Find the files: MNIST under `<root>/mnist/`; Fashion-MNIST under `<root>/fashion-mnist/` when all four
   files are there, else Debian's `dataset-fashion-mnist` in `/usr/share/datasets/fashion-mnist/`
   (the labels in the data dir are the same files); CIFAR-10 under `<root>/cifar-10-batches-py/` (the
   unpacked `cifar-10-python.tar.gz`). Missing files: one `DataNotFoundError` line naming the path.
2. Read and check: idx headers (magic 0x803 images, 0x801 labels, counts, 28 x 28) and the digest of the
   *decompressed* bytes against the published value (sha256 for MNIST as in ../shared/data/README.md,
   md5 for Fashion-MNIST: Debian's .gz headers differ from the official ones, their contents do not).
   CIFAR-10 batches are pickles: read with a restricted unpickler whose only globals are numpy's array
   reconstruction (`_ARRAY_GLOBALS`: what the official batches reference); any other global is refused
   before it is built, so a data file can never run code.
3. `ImageSet`: uint8 images (N, C, H, W), int64 labels, class names. `split_validation(train, n, seed)`
   holds out a class-stratified validation subset of the training images (seeded); the test set is the
   published one and is only ever scored.
Limits: the whole set in memory (MNIST 47 MB, CIFAR-10 180 MB as uint8).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from har.errors import BadDataError, BadOptionError, DataNotFoundError

NAMES = ("mnist", "fashion-mnist", "cifar10")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# digests of the decompressed files (../shared/data/README.md sections 1 and 2)
DIGESTS = {
    "mnist": ("sha256", {"train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                         "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                         "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                         "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}),
    "fashion-mnist": ("md5", {"train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                              "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
                              "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
                              "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965"}),
}
CLASSES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.source)


def check_name(name: str) -> None:
    if name not in NAMES:
        raise BadOptionError(f"unknown image dataset {name!r}; choose one of {', '.join(NAMES)}")


def _idx(raw: bytes, magic: int, what: str) -> np.ndarray:
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != magic:
        raise BadDataError(f"{what}: not an idx file with magic {magic:#010x}")
    n = int.from_bytes(raw[4:8], "big")
    if magic == 0x803:
        if len(raw) < 16:
            raise BadDataError(f"{what}: truncated idx3 header")
        h, w = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        body = np.frombuffer(raw, np.uint8, offset=16)
        if body.size != n * h * w:
            raise BadDataError(f"{what}: header says {n} x {h} x {w} images, the file holds {body.size} bytes")
        return body.reshape(n, 1, h, w)
    body = np.frombuffer(raw, np.uint8, offset=8)
    if body.size != n:
        raise BadDataError(f"{what}: header says {n} labels, the file holds {body.size}")
    return body.astype(np.int64)


def _idx_dir(name: str, root: Path) -> Path:
    here = root / name
    if all((here / f).is_file() for pair in IDX_FILES.values() for f in pair):
        return here
    if name == "fashion-mnist" and all((DEBIAN_FASHION / f).is_file() for pair in IDX_FILES.values() for f in pair):
        return DEBIAN_FASHION
    missing = [f for pair in IDX_FILES.values() for f in pair if not (here / f).is_file()]
    hint = " or install Debian's dataset-fashion-mnist" if name == "fashion-mnist" else ""
    raise DataNotFoundError(f"{name}: {missing[0]} not found in {here}{hint}")


def _read(path: Path, algo: str | None, expected: str | None) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise BadDataError(f"{path}: corrupt gzip ({e})") from None
    if expected and hashlib.new(algo, raw).hexdigest() != expected:
        raise BadDataError(f"{path}: {algo} of the decompressed file differs from the published one")
    return raw


def load_idx(name: str, split: str, folder: Path, check: bool = True) -> ImageSet:
    algo, digests = DIGESTS.get(name, (None, {}))
    img_f, lab_f = IDX_FILES[split]
    images = _idx(_read(folder / img_f, algo, digests.get(img_f) if check else None), 0x803, str(folder / img_f))
    labels = _idx(_read(folder / lab_f, algo, digests.get(lab_f) if check else None), 0x801, str(folder / lab_f))
    if len(images) != len(labels):
        raise BadDataError(f"{folder}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= 10:
        raise BadDataError(f"{folder / lab_f}: label {labels.max()} outside 0..9")
    return ImageSet(images, labels, CLASSES.get(name, CLASSES["mnist"]), f"{folder}/{img_f}")


# the only globals an official batch references: numpy's array reconstruction (numpy 1 and 2 names), and
# the bytes constructor protocol-2 pickles written by Python 3 use (_codecs.encode(text, "latin1"))
_ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _DataOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ARRAY_GLOBALS:
            raise BadDataError(f"refused to build {module}.{name} while reading a CIFAR-10 batch (data only)")
        if module == "_codecs":
            import codecs
            return codecs.encode
        if name != "_reconstruct":
            return getattr(np, name)
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy 1
            from numpy.core.multiarray import _reconstruct
        return _reconstruct


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64) of one official python batch."""
    try:
        d = _DataOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise BadDataError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise BadDataError(f"{path}: a CIFAR-10 batch holds a dict with b'data' and b'labels'")
    data, labels = d[b"data"], d[b"labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8) and not isinstance(data, (bytes, bytearray)):
        raise BadDataError(f"{path}: b'data' must be a uint8 array (got {type(data).__name__})")
    images = np.frombuffer(bytes(data), np.uint8) if isinstance(data, (bytes, bytearray)) else data.ravel()
    if images.size != len(labels) * 3072:
        raise BadDataError(f"{path}: {images.size} bytes of pixels for {len(labels)} labels (3072 each)")
    lab = np.asarray(labels, dtype=np.int64)
    if lab.size and (lab.min() < 0 or lab.max() > 9):
        raise BadDataError(f"{path}: labels outside 0..9")
    return images.reshape(-1, 3, 32, 32), lab


def load_cifar(split: str, folder: Path) -> ImageSet:
    files = CIFAR_TRAIN if split == "train" else ("test_batch",)
    for f in files:
        if not (folder / f).is_file():
            raise DataNotFoundError(f"cifar10: {f} not found in {folder} (unpack cifar-10-python.tar.gz there)")
    parts = [read_cifar_batch(folder / f) for f in files]
    return ImageSet(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    CLASSES["cifar10"], str(folder))


def load(name: str, root: Path, split: str) -> ImageSet:
    """The published `split` ("train" | "test") of image dataset `name` under data root `root`."""
    check_name(name)
    if split not in ("train", "test"):
        raise BadDataError(f"split must be train or test, got {split!r}")
    if name == "cifar10":
        return load_cifar(split, Path(root) / CIFAR_DIR)
    return load_idx(name, split, _idx_dir(name, Path(root)))


def split_validation(train: ImageSet, n_val: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """(fit, validation): a class-stratified random `n_val` of the training images held out."""
    rng = np.random.default_rng(seed)
    per_class = np.bincount(train.labels, minlength=len(train.classes))
    take = np.floor(per_class / len(train) * n_val).astype(int)
    val = np.concatenate([rng.permutation(np.flatnonzero(train.labels == c))[:take[c]] for c in range(len(per_class))])
    mask = np.zeros(len(train), bool)
    mask[val] = True
    return train.subset(np.flatnonzero(~mask)), train.subset(np.sort(val))
