"""``plasticd bench drift``: its streams, its scoring, and one tiny run through the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plasticd.bench.contenders import CONTENDERS
from plasticd.bench.drift import score
from plasticd.bench.streams import CONTROL, STREAMS, build_stream

EXPECTED = {  # name: (dim, classes, kind)
    "bananas": (2, 2, "real"),
    "phishing": (9, 2, "real"),
    "image-segments": (18, 7, "real"),
    "shuttle": (9, 2, "real"),
    "agrawal-abrupt": (40, 2, "abrupt"),
    "sea-abrupt": (3, 2, "abrupt"),
    "stagger-abrupt": (9, 2, "abrupt"),
    "sine-abrupt": (2, 2, "abrupt"),
    "agrawal-gradual": (40, 2, "gradual"),
    "led-gradual": (24, 10, "gradual"),
    "hyperplane-incremental": (10, 2, "incremental"),
    "rbf-incremental": (10, 5, "incremental"),
    "fashion-mnist-permuted": (784, 10, "permuted"),
    CONTROL: (10, 2, CONTROL),
}


def test_every_stream_is_listed() -> None:
    assert set(STREAMS) == set(EXPECTED)
    assert len([s for s in STREAMS if s != CONTROL]) >= 10


@pytest.mark.parametrize("name", STREAMS)
def test_stream_shape_drifts_and_determinism(name: str, fashion_mnist_dir: Path) -> None:
    a = build_stream(name, samples=240, seed=3, dataset=fashion_mnist_dir)
    dim, classes, kind = EXPECTED[name]
    assert (a.n, a.dim, a.num_classes, a.kind) == (240, dim, classes, kind)
    assert a.x.dtype == np.float32 and a.y.dtype == np.int64
    assert np.isfinite(a.x).all() and a.y.min() >= 0 and a.y.max() < classes
    if kind in ("abrupt", "gradual", "permuted"):
        assert a.drifts and all(0 < p < a.n for p in a.drifts) and list(a.drifts) == sorted(a.drifts)
    else:
        assert a.drifts == ()
    b = build_stream(name, samples=240, seed=3, dataset=fashion_mnist_dir)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.drifts == b.drifts
    if kind != "real":  # bundled data sets come in their own order whatever the seed
        c = build_stream(name, samples=240, seed=4, dataset=fashion_mnist_dir)
        assert not (np.array_equal(a.x, c.x) and np.array_equal(a.y, c.y))


def test_default_lengths_and_drift_positions() -> None:
    assert build_stream("phishing").n == 1250  # a real set: its size when shorter than the default
    assert build_stream("sea-abrupt").drifts == (2500, 5000, 7500)
    assert build_stream("stagger-abrupt", samples=300).drifts == (100, 200)  # positions scale with the length
    assert build_stream("agrawal-gradual", samples=1000).drifts == (500,)


def test_abrupt_stream_changes_concept_at_its_drifts() -> None:
    """STAGGER is noise-free: each segment follows its own rule exactly (0: small and red; 1: green or circle)."""
    s = build_stream("stagger-abrupt", samples=900)
    size, color, shape = s.x[:, 0:3].argmax(1), s.x[:, 3:6].argmax(1), s.x[:, 6:9].argmax(1)
    rule0 = ((size == 0) & (color == 0)).astype(np.int64)
    rule1 = ((color == 2) | (shape == 0)).astype(np.int64)
    first, second = slice(0, s.drifts[0]), slice(s.drifts[0], s.drifts[1])
    assert np.array_equal(s.y[first], rule0[first]) and np.array_equal(s.y[second], rule1[second])
    assert not np.array_equal(s.y[second], rule0[second])


def test_fashion_labels_are_permuted_at_the_drift(fashion_mnist_dir: Path) -> None:
    s = build_stream("fashion-mnist-permuted", samples=400, seed=0, dataset=fashion_mnist_dir)
    p = s.drifts[0]
    assert p == 200
    # same images, labels shifted by one fixed non-zero amount after the drift
    from plasticd.data.fashion_mnist import load_split

    train = load_split(fashion_mnist_dir, "train")
    pick = np.random.default_rng(0).choice(len(train), size=400, replace=False)
    shift = (s.y[p:] - train.y[pick][p:]) % 10
    assert len(set(shift.tolist())) == 1 and shift[0] != 0
    assert np.array_equal(s.y[:p], train.y[pick][:p])


def test_score_windows_at_the_drift_positions() -> None:
    correct = np.zeros(1000, dtype=bool)
    correct[:300] = True  # right before the drift at 300, wrong for 100 samples, then right again
    correct[400:] = True
    r = score(correct, drifts=(300, 950), window=200)
    assert r["prequential"] == pytest.approx(0.9)
    assert r["last20"] == 1.0
    assert r["drift_windows"] == [
        {"position": 300, "end": 500, "accuracy": 0.5},
        {"position": 950, "end": 1000, "accuracy": 1.0},  # cut at the end of the stream
    ]
    assert r["after_drift"] == pytest.approx(0.75)
    assert len(r["curve"]) == 20 and r["curve"][6] == 0.0 and r["curve"][0] == 1.0
    assert score(correct, drifts=(), window=200)["after_drift"] is None


def test_tiny_run_through_the_command_line(tmp_path: Path) -> None:
    out, md = tmp_path / "drift.json", tmp_path / "drift.md"
    n, window = 300, 50
    done = subprocess.run(
        [sys.executable, "-m", "plasticd", "bench", "drift", "--streams", "stagger-abrupt", CONTROL,
         "--samples", str(n), "--window", str(window), "--json", str(out), "--markdown", str(md)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["full"] is False and "targets: not judged" in done.stdout
    assert data["options"]["samples"] == n and data["settings"]["model"]["neurons"] > 0
    streams = {s["name"]: s for s in data["streams"]}
    assert set(streams) == {"stagger-abrupt", CONTROL}
    assert streams["stagger-abrupt"]["drifts"] == [100, 200]
    results = {(r["stream"], r["contender"]): r for r in data["results"]}
    assert set(results) == {(s, c) for s in streams for c in CONTENDERS}
    for r in results.values():
        assert r["samples"] == n
        for key in ("prequential", "last20"):
            assert 0.0 <= r[key] <= 1.0
        assert r["samples_per_s"] > 0
        if r["stream"] == CONTROL:
            # labels independent of x and of the past: any learner that predicts before it learns is a
            # fair coin here (Binomial(300, 1/2): 0.5 ± 0.029); a leak of the label would show
            assert abs(r["prequential"] - 0.5) < 0.15 and r["drift_windows"] == [] and r["after_drift"] is None
        else:
            assert [(w["position"], w["end"]) for w in r["drift_windows"]] == [(100, 150), (200, 250)]
            assert all(0.0 <= w["accuracy"] <= 1.0 for w in r["drift_windows"])
            assert r["after_drift"] == pytest.approx(np.mean([w["accuracy"] for w in r["drift_windows"]]))
    ingest = results[("stagger-abrupt", "plasticd-ingest")]["extra"]
    assert ingest["predicted"] == n and ingest["in_stream_order"] and ingest["duplicates"] == 0 and ingest["refused"] == 0
    assert set(data["summary"]) == set(CONTENDERS)
    assert all(s["streams"] == 1 and 0.0 <= s["control"] <= 1.0 for s in data["summary"].values())
    table = md.read_text()
    assert "| stagger-abrupt |" in table and "control (chance 50.0)" in table
