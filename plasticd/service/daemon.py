"""Assembly: build the worker for ``plasticd run`` (inbox or Fashion-MNIST) and ``plasticd ingest``.

One process owns one model: an exclusive ``flock`` on ``<checkpoints>/LOCK``
(released by the kernel even after ``kill -9``) keeps a second daemon or
ingest from training a diverging copy of the same model.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from plasticd.config import Settings
from plasticd.data.fashion_mnist import load_split
from plasticd.errors import ModelLockedError, PlasticdError
from plasticd.learn.engine import Engine
from plasticd.log import get_logger
from plasticd.samples import Limits
from plasticd.service.checkpoints import CheckpointStore
from plasticd.service.claims import Claimer, WorkArea
from plasticd.service.exporter import start_exporter
from plasticd.service.feeds import FileFeed, StreamFeed
from plasticd.service.messages import Wake
from plasticd.service.notify import Notifier
from plasticd.service.pipeline import Outcome, Pipeline
from plasticd.service.predictions import PredictionWriter
from plasticd.service.scheduler import MaintenanceScheduler
from plasticd.service.sources import FolderSource, InboxSource, is_candidate
from plasticd.service.worker import Worker

PREDICTIONS_FILE = "predictions.jsonl"


@contextmanager
def model_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "LOCK"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ModelLockedError(
                f"another plasticd process (pid {holder}) owns the model in {folder}; "
                "stop it first, or drop files into its inbox instead"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class RunSummary:
    files_processed: int
    files_failed: int
    samples: int
    accuracy: float | None
    samples_trained: int
    seconds: float
    test_accuracy: float | None = None


def _limits(settings: Settings) -> Limits:
    return Limits(**settings.limits.model_dump())  # the settings cover a subset; the rest keep Limits' defaults


def _common(settings: Settings) -> tuple[Engine, CheckpointStore, PredictionWriter]:
    engine = Engine.from_settings(settings)
    store = CheckpointStore(settings.paths.checkpoints, keep=settings.checkpoint.keep)
    predictions = PredictionWriter(settings.paths.state / PREDICTIONS_FILE)
    return engine, store, predictions


def _serve(worker: Worker, settings: Settings, source: FolderSource | None) -> RunSummary:
    import time

    start = time.monotonic()
    exporter = start_exporter(worker, settings.metrics)  # None unless metrics.enabled
    scheduler = MaintenanceScheduler(settings, worker.activity, worker.post, watch_inbox=isinstance(source, InboxSource))
    if isinstance(source, InboxSource):
        source.wake = lambda: worker.post(Wake())
        source.start()
    scheduler.start()
    try:
        worker.run()
    finally:
        if exporter is not None:
            exporter.stop()
        scheduler.stop()
        if isinstance(source, InboxSource):
            source.stop()
        worker.predictions.close()
        worker.notifier.close()
        if worker.work is not None and worker.session is not None:
            worker.work.remove_if_empty(worker.session)
    m = worker.engine.snapshot()
    c = worker.counters
    return RunSummary(c.files_processed, c.files_failed, c.samples, m.accuracy, m.samples_trained, time.monotonic() - start)


def build_file_worker(settings: Settings, source: FolderSource, destination: Path, mode: str = "daemon") -> Worker:
    """A worker over files from ``source`` that go to ``destination`` (call under ``model_lock``)."""
    p = settings.paths
    engine, store, predictions = _common(settings)
    work = WorkArea(p.work, p.failed, owner=p.checkpoints)
    session = work.open_session(source.folder, destination)
    feed = FileFeed(source, Claimer(session), settings.model.input_dim, settings.model.num_classes, _limits(settings))
    pipeline = Pipeline(engine, predictions, p.failed, settings.train.max_batch)
    return Worker(settings, engine, store, feed, pipeline, predictions, Notifier(), work=work, session=session, mode=mode)  # type: ignore[arg-type]


def run_inbox(settings: Settings) -> RunSummary:
    """The daemon: watch ``paths.inbox`` until SIGTERM/SIGINT."""
    p = settings.paths
    with model_lock(p.checkpoints):
        p.inbox.mkdir(parents=True, exist_ok=True)
        source = InboxSource(p.inbox, settings.daemon.settle_seconds, wake=lambda: None)
        worker = build_file_worker(settings, source, p.processed)
        return _serve(worker, settings, source)


def run_ingest(settings: Settings, folder: Path, destination: Path, progress: bool = True) -> RunSummary:
    """One-shot: the same pipeline over ``folder``, files to ``destination``; returns when it is drained."""
    if not folder.is_dir():
        raise PlasticdError(f"ingest: {folder} is not a folder")
    p = settings.paths
    with model_lock(p.checkpoints):
        source = FolderSource(folder.resolve(), settle_seconds=0.0)
        worker = build_file_worker(settings, source, destination, mode="burst")
        if progress:
            _attach_progress(worker, folder)
        return _serve(worker, settings, source)


def _attach_progress(worker: Worker, folder: Path) -> None:
    """A tqdm bar on stderr (only when it is a terminal), advanced after each micro-batch."""
    from tqdm import tqdm

    total = sum(1 for name in os.listdir(folder) if is_candidate(name))
    bar = tqdm(total=total, unit="file", file=sys.stderr, disable=None, dynamic_ncols=True)

    def advance(outcome: Outcome) -> None:
        m = worker.engine.snapshot()
        bar.update(outcome.files_processed + len(outcome.failed))
        bar.set_postfix(acc="-" if m.accuracy is None else f"{m.accuracy:.3f}", failed=worker.counters.files_failed)

    worker.on_batch.append(advance)


def run_stream(settings: Settings, epochs: int, limit: int | None) -> RunSummary:
    """The built-in demo: the Fashion-MNIST training stream through the same worker, then the test set."""
    p = settings.paths
    train = load_split(p.dataset, "train")
    test = load_split(p.dataset, "test")
    with model_lock(p.checkpoints):
        engine, store, predictions = _common(settings)
        feed = StreamFeed(train, settings.runtime.seed, epochs, limit)
        # 60k demo samples: their per-sample events go to debug; daemon.progress tells the story
        pipeline = Pipeline(engine, predictions, p.failed, settings.train.max_batch, sample_log_level="debug")
        worker = Worker(settings, engine, store, feed, pipeline, predictions, Notifier(), mode="burst")
        summary = _serve(worker, settings, None)
    accuracy = engine.evaluate(torch.from_numpy(test.x), torch.from_numpy(test.y))
    m = engine.snapshot()
    get_logger("stream").info(
        "stream.finished",
        samples=m.samples_seen,
        trained=m.samples_trained,
        prequential_accuracy=None if m.accuracy is None else round(m.accuracy, 4),
        window_accuracy=None if m.window_accuracy is None else round(m.window_accuracy, 4),
        test_accuracy=round(accuracy, 4),
        rewires=engine.rewires,
        active_connections=engine.active_connections,
    )
    return RunSummary(**{**summary.__dict__, "test_accuracy": accuracy})
