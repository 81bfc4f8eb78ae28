"""The IDX reader, on synthetic files and on its error paths; the one seeded epoch order of every stream."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from plasticd.data.fashion_mnist import Split, load_split, read_idx
from plasticd.data.stream import epoch_order, stream_batches
from plasticd.errors import DatasetError
from plasticd.service.feeds import StreamFeed


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_split(folder: Path, n: int, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    for stem, arr in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        raw = _idx(arr)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files(tmp_path: Path, gz: bool) -> None:
    images, labels = _write_split(tmp_path, 5, gz)
    split = load_split(tmp_path, "train")
    assert split.x.shape == (5, 784) and split.x.dtype == np.float32
    np.testing.assert_allclose(split.x, images.reshape(5, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(split.y, labels)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(_idx(np.zeros((4, 3)))[:-2])
    with pytest.raises(DatasetError, match="x.idx.*expected"):
        read_idx(path)


def test_bad_magic_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(path)


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_split(tmp_path / "absent", "train")
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.*not found"):
        load_split(tmp_path, "test")


def test_real_fashion_mnist_has_the_documented_shape(fashion_mnist_dir: Path) -> None:
    test = load_split(fashion_mnist_dir, "test")
    assert test.x.shape == (10000, 784) and set(np.unique(test.y)) == set(range(10))
    assert 0.0 <= test.x.min() and test.x.max() <= 1.0


def test_epoch_order_is_the_seeded_permutation_checkpoints_depend_on() -> None:
    # the exact arrays a checkpointed stream position points into: changing them breaks every resume
    for seed, epoch in ((0, 0), (0, 1), (7, 3)):
        full = np.random.default_rng(seed + epoch).permutation(100)
        np.testing.assert_array_equal(epoch_order(100, seed, epoch), full)
        np.testing.assert_array_equal(epoch_order(100, seed, epoch, 30), full[:30])
    assert not np.array_equal(epoch_order(100, 0, 0), epoch_order(100, 0, 1)), "each pass is shuffled afresh"
    np.testing.assert_array_equal(epoch_order(10, 3, 0)[:4], [9, 6, 0, 2])  # pinned: numpy's PCG64 stream


def _tiny_split(n: int) -> Split:
    x = np.arange(n * 784, dtype=np.float32).reshape(n, 784)
    return Split(x=x, y=np.arange(n, dtype=np.int64) % 10)


def test_benchmark_stream_and_daemon_stream_feed_see_the_same_order() -> None:
    split = _tiny_split(50)
    batches = list(stream_batches(split, batch_size=7, seed=5, epochs=2, limit=20))
    seen = np.concatenate([b.index for b in batches])
    np.testing.assert_array_equal(seen, np.concatenate([epoch_order(50, 5, 0, 20), epoch_order(50, 5, 1, 20)]))
    for b in batches:
        np.testing.assert_array_equal(b.x.numpy(), split.x[b.index])
        np.testing.assert_array_equal(b.y, split.y[b.index])

    feed = StreamFeed(split, seed=5, epochs=2, limit=20)
    fed = [item.load() for items in iter(lambda: feed.take(9), []) for item in items]
    np.testing.assert_array_equal(np.concatenate([s.y for s in fed]), split.y[seen])
    np.testing.assert_array_equal(np.concatenate([s.x for s in fed]), split.x[seen])
