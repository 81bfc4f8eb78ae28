"""Shared fixtures: isolated settings, structlog reset, the real dataset when installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog
import torch

from plasticd.config import Settings, load_settings

DATASET = Path(os.environ.get("PLASTICD_TEST_DATASET", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture(autouse=True)
def _isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PLASTICD_* variable from the caller's shell leaks into a test; logging starts clean."""
    for key in list(os.environ):
        if key.startswith("PLASTICD_"):
            monkeypatch.delenv(key)
    structlog.reset_defaults()
    torch.set_num_threads(1)


def make_settings(**sections: dict) -> Settings:
    """Settings from defaults plus per-section overrides, e.g. make_settings(model={"neurons": 16})."""
    return load_settings(None, sections)


def small_settings(**sections: dict) -> Settings:
    """A tiny network on the CPU for fast unit tests; sections override the small defaults."""
    base: dict = {
        "model": {"neurons": 24, "iterations": 3, "input_dim": 12, "num_classes": 4},
        "runtime": {"device": "cpu", "seed": 0},
        "plasticity": {"interval": 0, "min_age": 0, "buffer_size": 32},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_settings(None, base)


@pytest.fixture
def fashion_mnist_dir() -> Path:
    if not (DATASET / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not found in {DATASET}: run ./setup.sh (apt-get install dataset-fashion-mnist)")
    return DATASET
