"""Helpers for tests that run the real ``plasticd`` process in a temporary folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

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
    from plasticd.service.checkpoints import CheckpointStore
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
