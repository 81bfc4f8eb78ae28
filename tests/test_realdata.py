"""A few thousand real Fashion-MNIST samples lift the default network well above chance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plasticd.data.fashion_mnist import load_split
from plasticd.data.stream import stream_batches
from plasticd.learn.engine import Engine
from tests.helpers import make_settings


@pytest.mark.slow
def test_three_thousand_samples_learn_fashion_mnist(fashion_mnist_dir: Path) -> None:
    train = load_split(fashion_mnist_dir, "train")
    test = load_split(fashion_mnist_dir, "test")
    engine = Engine.from_settings(make_settings(runtime={"device": "cpu"}, paths={"dataset": str(fashion_mnist_dir)}))
    for batch in stream_batches(train, 1, seed=0, limit=3000):
        engine.step(batch.x, batch.y)
    snap = engine.snapshot()
    accuracy = engine.evaluate(torch.from_numpy(test.x[:2000]), torch.from_numpy(test.y[:2000]))
    assert snap.samples_trained == 3000 and engine.rewires == 3
    assert snap.accuracy > 0.65, f"prequential accuracy {snap.accuracy}"  # chance is 0.10
    assert accuracy > 0.75, f"test accuracy {accuracy}"
