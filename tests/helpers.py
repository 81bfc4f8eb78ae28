"""Helpers shared by the test modules (the one place for them; conftest.py holds only fixtures).

* settings: ``make_settings``, ``small_settings``;
* data: ``toy_data``, a learnable toy problem;
* logs and faults: ``events_named``, ``no_space``, ``fail_fsync``, ``fail_rename``;
* the real ``plasticd`` process in a temporary folder: ``write_config``, ``Daemon``,
  ``drop``, ``wait_until``, ``files_in``, ``predictions``, and ``worker_around``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from plasticd.config import Settings, load_settings

# ---------------------------------------------------------------- settings


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


# ---------------------------------------------------------------- data


def toy_data(n: int, dim: int = 12, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A learnable toy problem: the class is the argmax of a fixed linear map of x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    proj = torch.randn(dim, classes, generator=torch.Generator().manual_seed(99))
    return x, (x @ proj).argmax(dim=1).numpy()


# ---------------------------------------------------------------- logs and injected faults


def events_named(logs: list[dict], name: str) -> list[dict]:
    """The captured log entries (``structlog.testing.capture_logs``) whose event is ``name``."""
    return [entry for entry in logs if entry["event"] == name]


def no_space() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def fail_fsync(monkeypatch: pytest.MonkeyPatch, wanted: Callable[[str], bool]) -> None:
    """os.fsync raises ENOSPC for the file descriptors whose path ``wanted`` picks."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if wanted(os.readlink(f"/proc/self/fd/{fd}")):
            raise no_space()
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def fail_rename(monkeypatch: pytest.MonkeyPatch, suffix: str, error: BaseException) -> None:
    """os.rename raises ``error`` for every destination ending in ``suffix``."""
    real = os.rename

    def rename(src, dst) -> None:
        if str(dst).endswith(suffix):
            raise error
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)


# ---------------------------------------------------------------- the real plasticd process

DIM, CLASSES = 8, 3
CONFIG = f"""
[model]
neurons = 32
iterations = 2
input_dim = {DIM}
num_classes = {CLASSES}
[runtime]
device = "cpu"
threads = 1
[daemon]
idle_seconds = 0.5
rescan_seconds = 0.5
settle_seconds = 0.0
status_seconds = 0.2
[checkpoint]
every_samples = 50
idle_seconds = 0.3
min_interval_seconds = 0.0
[plasticity]
interval = 40
min_age = 10
buffer_size = 16
[log]
format = "json"
level = "info"
"""


def write_config(root: Path, extra: str = "") -> Path:
    path = root / "plasticd.toml"
    path.write_text(CONFIG + extra)
    return path


def plasticd(root: Path, *args: str) -> subprocess.CompletedProcess:
    """One ``plasticd`` command with ``root/plasticd.toml`` (from ``write_config``), run in ``root``; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "plasticd", *args, "--config", str(root / "plasticd.toml")],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def sample_json(rng: np.random.Generator, n: int = 1, labelled: bool = True) -> str:
    x = rng.normal(size=(n, DIM)).round(4)
    doc: dict = {"x": x[0].tolist() if n == 1 else x.tolist()}
    if labelled:
        y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
        doc["y"] = int(y[0]) if n == 1 else y.tolist()
    return json.dumps(doc)


def drop(folder: Path, name: str, content: str | bytes) -> Path:
    """Write-then-rename, as producers should."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    final = folder / name
    os.rename(tmp, final)
    return final


class Daemon:
    """``plasticd run`` in ``root`` with its log captured to a file."""

    def __init__(self, root: Path, *args: str, env: dict | None = None) -> None:
        self.root = root
        self.log_path = root / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plasticd", "run", "--config", str(root / "plasticd.toml"), *args],
            cwd=root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):  # a line still being written
                    out.append(json.loads(line))
        return out

    def wait_for_event(self, name: str, timeout: float = 60.0, count: int = 1) -> list[dict]:
        return wait_until(
            lambda: (
                [e for e in self.events() if e.get("event") == name][:count]
                if len([e for e in self.events() if e.get("event") == name]) >= count
                else None
            ),
            timeout,
            f"event {name} x{count}\n{self.tail()}",
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def files_in(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith(".")) if folder.exists() else []


def work_files(root: Path, work: str = "data_work") -> list[Path]:
    """Claimed files still waiting in a work area (its bookkeeping files aside)."""
    return [p for p in (root / work).rglob("*") if p.is_file() and p.name not in ("OWNER", "session.json")]


def predictions(root: Path) -> list[dict]:
    path = root / "state" / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def worker_around(settings, engine, root: Path):
    """A Worker around an existing ``engine`` under ``settings``, over an empty folder under ``root``.

    For tests that hand the worker messages (``Worker.handle``) rather than files.
    """
    from plasticd.samples import Limits
    from plasticd.service.checkpoint_store import CheckpointStore
    from plasticd.service.claims import Claimer, WorkArea
    from plasticd.service.feeds import FileFeed
    from plasticd.service.notify import Notifier
    from plasticd.service.pipeline import Pipeline
    from plasticd.service.predictions import PredictionWriter
    from plasticd.service.sources import FolderSource
    from plasticd.service.worker import Worker

    source = FolderSource(root / "inbox")
    source.folder.mkdir(parents=True, exist_ok=True)
    work = WorkArea(root / "work", root / "failed", owner=root / "checkpoints")
    session = work.open_session(source.folder, root / "processed")
    feed = FileFeed(source, Claimer(session), settings.model.input_dim, settings.model.num_classes, Limits())
    predictions = PredictionWriter(root / "predictions.jsonl")
    pipeline = Pipeline(engine, predictions, root / "failed", settings.train.max_batch)
    store = CheckpointStore(root / "checkpoints")
    return Worker(settings, engine, store, feed, pipeline, predictions, Notifier(), work=work, session=session)


def fill(folder: Path, name: str = ".filler.tmp") -> Path:
    """Fill ``folder``'s file system to the last byte; the returned file frees it again when removed.

    ``name`` is a dot file: never taken for a sample, never quarantined, never a checkpoint."""
    filler = folder / name
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return filler
