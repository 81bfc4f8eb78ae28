"""Shared fixtures: isolated settings, structlog reset, the real dataset when installed.

Helper functions shared by test modules live in tests/helpers.py, not here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog
import torch

DATASET = Path(os.environ.get("PLASTICD_TEST_DATASET", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture(autouse=True)
def _isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PLASTICD_* variable from the caller's shell leaks into a test; logging starts clean."""
    for key in list(os.environ):
        if key.startswith("PLASTICD_"):
            monkeypatch.delenv(key)
    structlog.reset_defaults()
    torch.set_num_threads(1)


@pytest.fixture
def fashion_mnist_dir() -> Path:
    if not (DATASET / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not found in {DATASET}: run ./setup.sh (apt-get install dataset-fashion-mnist)")
    return DATASET
