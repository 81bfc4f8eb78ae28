"""The streams of ``plasticd bench drift``: offline, seeded, with their known drift positions.

Every stream is built in memory from data that ships with installed packages
(river's bundled data sets and its synthetic generators) or from the local
Fashion-MNIST copy; nothing is downloaded. river yields dicts; each stream
turns them into fixed-order float32 vectors (categorical features one-hot), so
every contender sees exactly the same numbers, and labels into 0..C-1.

Kinds and what a drift position means:

    real         a bundled data set in its own order; no known drift
    abrupt       the concept switches at each position (segments of fresh generators)
    gradual      river's ConceptDriftStream: the position is the centre of a
                 sigmoid blend of ``width`` samples between two concepts
    incremental  the concept moves a little every sample; no discrete position
    permuted     Fashion-MNIST whose labels are permuted at the position
    control      labels independent of x: every honest learner is at chance

Positions scale with the requested length, so a shortened run still crosses
its drifts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where a stream is built: the CLI imports this module for its names
    import numpy as np

DEFAULT_SAMPLES = 10_000
# 784 features make river's trees slow (ARF ~45, HAT ~30 samples/s): a shorter default keeps a full run
# near a quarter of an hour on two cores, with 3,000 samples on either side of the change.
FASHION_SAMPLES = 6_000
CONTROL = "control"


@dataclass(frozen=True)
class Stream:
    name: str
    kind: str  # real | abrupt | gradual | incremental | permuted | control
    x: np.ndarray  # (n, D) float32
    y: np.ndarray  # (n,) int64 in [0, num_classes)
    num_classes: int
    drifts: tuple[int, ...]  # sample indices where a known change happens (centre, for gradual)
    description: str

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def dim(self) -> int:
        return self.x.shape[1]


@dataclass(frozen=True)
class Features:
    """How a river dict becomes a vector: numeric keys in order, then each categorical key one-hot."""

    numeric: tuple  # keys taken as floats
    categorical: tuple[tuple[object, tuple], ...] = ()  # (key, its values in one-hot order)

    def vector(self, x: dict) -> list[float]:
        out = [float(x[k]) for k in self.numeric]
        for key, values in self.categorical:
            out += [1.0 if x[key] == v else 0.0 for v in values]
        return out


def _arrays(pairs: Iterable[tuple[dict, object]], features: Features, labels: tuple) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    index = {label: i for i, label in enumerate(labels)}
    xs, ys = [], []
    for x, y in pairs:
        xs.append(features.vector(x))
        ys.append(index[y])
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.int64)


def _segments(makers: Sequence[Callable[[], Iterable]], cuts: list[int], n: int) -> Iterator:
    """Samples 0..n-1 from makers[i] between cuts[i-1] and cuts[i]: an abrupt switch at each cut."""
    bounds = [0, *cuts, n]
    for make, a, b in zip(makers, bounds[:-1], bounds[1:], strict=True):
        yield from islice(iter(make()), b - a)


def _cuts(n: int, parts: int) -> list[int]:
    return [round(n * i / parts) for i in range(1, parts)]


# ----------------------------------------------------------------------------- real


def _real(name: str, dataset: str, n: int | None, seed: int) -> Stream:
    from river import datasets

    data = list(getattr(datasets, dataset)())
    if n is not None:
        data = data[:n]
    first = data[0][0]
    labels = tuple(sorted({y for _, y in data}, key=str))
    x, y = _arrays(data, Features(tuple(first)), labels)
    return Stream(name, "real", x, y, len(labels), (), f"river datasets.{dataset}, bundled order, first {len(y)}")


# ------------------------------------------------------------------------ synthetic

AGRAWAL = Features(
    ("salary", "commission", "age", "hvalue", "hyears", "loan"),
    (("elevel", tuple(range(5))), ("car", tuple(range(1, 21))), ("zipcode", tuple(range(9)))),
)
STAGGER = Features((), (("size", (0, 1, 2)), ("color", (0, 1, 2)), ("shape", (0, 1, 2))))


def _agrawal_abrupt(n: int, seed: int) -> Stream:
    from river.datasets import synth

    fns, cuts = (0, 2, 4), _cuts(n, 3)
    makers = [partial(synth.Agrawal, classification_function=f, seed=seed + i) for i, f in enumerate(fns)]
    x, y = _arrays(_segments(makers, cuts, n), AGRAWAL, (0, 1))
    return Stream("agrawal-abrupt", "abrupt", x, y, 2, tuple(cuts), f"Agrawal functions {fns}, abrupt switches")


def _sea_abrupt(n: int, seed: int) -> Stream:
    from river.datasets import synth

    variants, cuts = (0, 1, 2, 3), _cuts(n, 4)
    makers = [partial(synth.SEA, variant=v, noise=0.1, seed=seed + i) for i, v in enumerate(variants)]
    x, y = _arrays(_segments(makers, cuts, n), Features((0, 1, 2)), (False, True))
    return Stream("sea-abrupt", "abrupt", x, y, 2, tuple(cuts), f"SEA variants {variants}, 10% label noise")


def _stagger_abrupt(n: int, seed: int) -> Stream:
    from river.datasets import synth

    fns, cuts = (0, 1, 2), _cuts(n, 3)
    makers = [partial(synth.STAGGER, classification_function=f, seed=seed + i) for i, f in enumerate(fns)]
    x, y = _arrays(_segments(makers, cuts, n), STAGGER, (0, 1))
    return Stream("stagger-abrupt", "abrupt", x, y, 2, tuple(cuts), f"STAGGER functions {fns}, one-hot")


def _sine_abrupt(n: int, seed: int) -> Stream:
    from river.datasets import synth

    fns, cuts = (0, 1, 2, 3), _cuts(n, 4)
    makers = [partial(synth.Sine, classification_function=f, seed=seed + i) for i, f in enumerate(fns)]
    x, y = _arrays(_segments(makers, cuts, n), Features((0, 1)), (0, 1))
    return Stream("sine-abrupt", "abrupt", x, y, 2, tuple(cuts), f"Sine functions {fns} (1 and 3 reverse 0 and 2)")


def _agrawal_gradual(n: int, seed: int) -> Stream:
    from river.datasets import synth

    pos, width = n // 2, max(1, n // 5)
    gen = synth.ConceptDriftStream(
        synth.Agrawal(classification_function=1, seed=seed),
        synth.Agrawal(classification_function=4, seed=seed + 1),
        position=pos, width=width, seed=seed + 2,
    )  # fmt: skip
    x, y = _arrays(gen.take(n), AGRAWAL, (0, 1))
    return Stream("agrawal-gradual", "gradual", x, y, 2, (pos,), f"Agrawal function 1 -> 4 over {width} samples")


def _led_gradual(n: int, seed: int) -> Stream:
    from river.datasets import synth

    pos, width = n // 2, max(1, n // 5)
    gen = synth.ConceptDriftStream(
        synth.LEDDrift(seed=seed, noise_percentage=0.1, irrelevant_features=True, n_drift_features=0),
        synth.LEDDrift(seed=seed + 1, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7),
        position=pos, width=width, seed=seed + 2,
    )  # fmt: skip
    x, y = _arrays(gen.take(n), Features(tuple(range(24))), tuple(range(10)))
    return Stream("led-gradual", "gradual", x, y, 10, (pos,), f"LED, 10% noise, 7 of 24 features swapped over {width} samples")


def _hyperplane(n: int, seed: int) -> Stream:
    from river.datasets import synth

    gen = synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=1e-3, noise_percentage=0.05, sigma=0.1)
    x, y = _arrays(gen.take(n), Features(tuple(range(10))), (0, 1))
    return Stream("hyperplane-incremental", "incremental", x, y, 2, (), "rotating hyperplane, 10 features, 5 drifting, mag 1e-3")


def _rbf(n: int, seed: int) -> Stream:
    from river.datasets import synth

    gen = synth.RandomRBFDrift(seed_model=seed, seed_sample=seed + 1, n_classes=5, n_features=10, change_speed=1e-3)
    x, y = _arrays(gen.take(n), Features(tuple(range(10))), tuple(range(5)))
    return Stream("rbf-incremental", "incremental", x, y, 5, (), "RandomRBFDrift, 5 classes, 50 moving centroids, speed 1e-3")


def _fashion_permuted(n: int, seed: int, dataset: Path) -> Stream:
    import numpy as np

    from plasticd.data.fashion_mnist import load_split

    train = load_split(dataset, "train")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train), size=min(n, len(train)), replace=False)
    x, y = train.x[pick].astype(np.float32), train.y[pick].astype(np.int64)
    pos = len(y) // 2
    perm = np.roll(np.arange(10), 1 + int(rng.integers(9)))  # a cyclic shift: every class gets a new label
    y = np.concatenate([y[:pos], perm[y[pos:]]])
    return Stream(
        "fashion-mnist-permuted", "permuted", x, y, 10, (pos,), "Fashion-MNIST train sample, labels shifted cyclically halfway"
    )


def _control(n: int, seed: int) -> Stream:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    y = rng.integers(0, 2, size=n).astype(np.int64)
    return Stream(CONTROL, CONTROL, x, y, 2, (), "10 Gaussian features, fair-coin labels independent of x: chance is 0.5")


# ---------------------------------------------------------------------- registry

REAL_SIZES = {
    "bananas": ("Bananas", 5300),
    "phishing": ("Phishing", 1250),
    "image-segments": ("ImageSegments", 2310),
    "shuttle": ("Shuttle", 49097),
}
SYNTHETIC: dict[str, Callable[[int, int], Stream]] = {
    "agrawal-abrupt": _agrawal_abrupt,
    "sea-abrupt": _sea_abrupt,
    "stagger-abrupt": _stagger_abrupt,
    "sine-abrupt": _sine_abrupt,
    "agrawal-gradual": _agrawal_gradual,
    "led-gradual": _led_gradual,
    "hyperplane-incremental": _hyperplane,
    "rbf-incremental": _rbf,
}
STREAMS: tuple[str, ...] = (*REAL_SIZES, *SYNTHETIC, "fashion-mnist-permuted", CONTROL)


def build_stream(name: str, samples: int | None = None, seed: int = 0, dataset: Path | None = None) -> Stream:
    """Stream ``name`` with ``samples`` samples (default 10,000, Fashion-MNIST 6,000; a real set: at most its size), seeded."""
    n = samples or (FASHION_SAMPLES if name == "fashion-mnist-permuted" else DEFAULT_SAMPLES)
    if name in REAL_SIZES:
        dataset_name, size = REAL_SIZES[name]
        return _real(name, dataset_name, min(n, size), seed)
    if name in SYNTHETIC:
        return SYNTHETIC[name](n, seed)
    if name == "fashion-mnist-permuted":
        if dataset is None:
            raise ValueError("the Fashion-MNIST stream needs the dataset folder (paths.dataset)")
        return _fashion_permuted(n, seed, dataset)
    if name == CONTROL:
        return _control(n, seed)
    raise ValueError(f"unknown stream {name!r}; streams: {', '.join(STREAMS)}")
