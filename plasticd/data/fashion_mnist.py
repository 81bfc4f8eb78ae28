"""Fashion-MNIST from its IDX files (gzip or plain), read locally; nothing is downloaded.

Debian's ``dataset-fashion-mnist`` package installs them under
``/usr/share/datasets/fashion-mnist/``; ``paths.dataset`` points elsewhere.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plasticd.errors import DatasetError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
}  # fmt: skip
_HOW_TO_GET = (
    "install Debian's package (sudo apt-get install dataset-fashion-mnist), "
    "or copy the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist "
    "to a folder and set paths.dataset (PLASTICD_PATHS__DATASET) to it"
)


@dataclass(frozen=True)
class Split:
    """One split: ``x`` float32 (n, 784) scaled to [0, 1], ``y`` int64 (n,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into an array, checking its header."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{path}: {len(raw)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"Fashion-MNIST file {stem}(.gz) not found in {folder}: {_HOW_TO_GET}")


def load_split(folder: Path, split: str) -> Split:
    """Load ``train`` (60,000) or ``test`` (10,000) from ``folder``."""
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    if not folder.is_dir():
        raise DatasetError(f"Fashion-MNIST folder {folder} does not exist: {_HOW_TO_GET}")
    images_stem, labels_stem = _FILES[split]
    images = read_idx(_find(folder, images_stem))
    labels = read_idx(_find(folder, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    x = images.reshape(len(images), -1).astype(np.float32)
    x /= 255.0  # in place: the float copy of the training set alone is 188 MB
    return Split(x=x, y=labels.astype(np.int64))
