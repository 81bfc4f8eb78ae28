"""Assembly: build the worker for ``plasticd run`` (inbox or Fashion-MNIST) and ``plasticd ingest``.

One process owns one model: an exclusive ``flock`` on ``<checkpoints>/LOCK``
(released by the kernel even after ``kill -9``) keeps a second daemon or
ingest from training a diverging copy of the same model.

Before anything is claimed, ``check_folders`` refuses what would go wrong
later, with a message naming the settings: data folders that overlap or nest
(``paths.inbox = paths.processed`` would learn every file again and again),
folders that cannot be created or written, and a source folder on another
file system than ``paths.work`` (claims are atomic renames, which cannot cross
file systems).
"""

from __future__ import annotations

import fcntl
import os
import queue
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from plasticd.config import Settings
from plasticd.data.fashion_mnist import Split, load_split
from plasticd.errors import ConfigError, DatasetError, ModelLockedError, PlasticdError, UsageError
from plasticd.learn.engine import Engine
from plasticd.learn.prequential import MetricsSnapshot
from plasticd.log import get_logger
from plasticd.samples import Limits
from plasticd.service.checkpoint_store import CheckpointStore
from plasticd.service.claims import Claimer, WorkArea
from plasticd.service.copy_claims import CopyClaimer
from plasticd.service.feeds import FileFeed, StreamFeed
from plasticd.service.messages import Message, Wake
from plasticd.service.notify import Notifier
from plasticd.service.pipeline import Outcome, Pipeline
from plasticd.service.predictions import PredictionWriter
from plasticd.service.prometheus import start_exporter
from plasticd.service.retention import Retention
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


# ---------------------------------------------------------------- start-up checks


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))  # symlinks followed where they exist: two names of one folder overlap


def check_separate(folders: dict[str, Path]) -> None:
    """ConfigError when two data folders are the same folder or one lies inside another (both settings, both paths)."""
    real = {name: _resolved(path) for name, path in folders.items()}
    names = list(real)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa, pb = real[a], real[b]
            if pa == pb:
                how = "are the same folder"
            elif pa in pb.parents:
                how = f"overlap: {b} lies inside {a}"
            elif pb in pa.parents:
                how = f"overlap: {a} lies inside {b}"
            else:
                continue
            raise ConfigError(
                f"{a} ({folders[a]}) and {b} ({folders[b]}) {how} ({pa}, {pb}); every data folder must be "
                "a separate folder, none inside another (files would be taken again from where they are put)"
            )


def prepare_folders(folders: dict[str, Path]) -> None:
    """Create missing folders; PlasticdError naming the setting when one cannot be created or written."""
    for name, path in folders.items():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise PlasticdError(f"{name} ({path}) exists but is not a folder") from None
        except OSError as exc:
            raise PlasticdError(f"{name} ({path}) cannot be created: {exc.strerror or exc}") from None
        if not path.is_dir():
            raise PlasticdError(f"{name} ({path}) is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PlasticdError(
                f"{name} ({path}) is not writable by this user (uid {os.getuid()}): plasticd renames files into and "
                "out of its folders; fix the owner or mode, or point the setting elsewhere"
            )


def check_same_file_system(source_name: str, source: Path, work: Path) -> None:
    """ConfigError when files would be claimed across file systems (a rename cannot; EXDEV)."""
    if os.stat(source).st_dev != os.stat(work).st_dev:
        raise ConfigError(
            f"{source_name} ({source}) is on another file system than paths.work ({work}): files are claimed by an "
            "atomic rename, which cannot cross file systems. Copy the files onto the file system of paths.work first "
            f"(e.g. cp -r {source} {work.parent}/incoming, then use that folder), or set paths.work on the file system "
            f"of {source_name}"
        )


def check_folders(folders: dict[str, Path], source: str) -> None:
    """The start-up checks of ``plasticd run``/``ingest``: separate, usable folders; claims within one file system."""
    check_separate(folders)
    prepare_folders(folders)
    check_same_file_system(source, folders[source], folders["paths.work"])


def _data_folders(settings: Settings, *names: str) -> dict[str, Path]:
    return {f"paths.{name}": getattr(settings.paths, name) for name in names}


@dataclass(frozen=True)
class RunSummary:
    """What this run did (not the model's lifetime, which the checkpoint's counters carry)."""

    files_processed: int
    files_failed: int
    samples: int
    accuracy: float | None  # prequential accuracy over this run's labelled samples
    samples_trained: int  # the model's lifetime total
    seconds: float
    test_accuracy: float | None = None
    samples_labelled: int = 0  # this run


@dataclass
class RunCount:
    """An ``on_batch`` hook that counts this run's files and samples."""

    files_processed: int = 0
    files_failed: int = 0
    samples: int = 0

    def __call__(self, outcome: Outcome) -> None:
        self.files_processed += outcome.files_processed
        self.files_failed += len(outcome.failed)
        self.samples += outcome.samples


def _limits(settings: Settings) -> Limits:
    return Limits(**settings.limits.model_dump())  # the settings cover a subset; the rest keep Limits' defaults


def _common(settings: Settings) -> tuple[Engine, CheckpointStore, PredictionWriter]:
    if settings.evolution.enabled:
        raise ConfigError(
            "evolution.enabled = true: the population runs in process only so far (plasticd bench evolve); "
            "the daemon learns one network: set evolution.enabled = false"
        )
    engine = Engine.from_settings(settings)
    c = settings.checkpoint
    retention = Retention(keep=c.keep, hourly=c.keep_hourly, daily=c.keep_daily, max_bytes=c.max_total_bytes)
    store = CheckpointStore(settings.paths.checkpoints, keep=c.keep, retention=retention)
    predictions = PredictionWriter(settings.paths.state / PREDICTIONS_FILE)
    return engine, store, predictions


def _serve(worker: Worker, settings: Settings, source: FolderSource | None) -> RunSummary:
    import time

    start = time.monotonic()
    count = RunCount()
    worker.on_batch.append(count)
    exporter = start_exporter(worker, settings.metrics)  # None unless metrics.enabled
    scheduler = MaintenanceScheduler(settings, worker.activity, worker.post, watch_inbox=isinstance(source, InboxSource))
    if isinstance(source, InboxSource):
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
    before = worker.heartbeat.at_ready or m  # the model as this run found it (after recovery)
    labelled = m.samples_labelled - before.samples_labelled
    correct = _correct(m) - _correct(before)
    accuracy = correct / labelled if labelled > 0 else None
    return RunSummary(
        count.files_processed, count.files_failed, count.samples, accuracy, m.samples_trained, time.monotonic() - start,
        samples_labelled=labelled,
    )  # fmt: skip


def _correct(m: MetricsSnapshot) -> int:
    return round((m.accuracy or 0.0) * m.samples_labelled)


def build_file_worker(
    settings: Settings,
    source: FolderSource,
    destination: Path,
    mode: str = "daemon",
    copy: bool = False,
    messages: queue.SimpleQueue[Message] | None = None,
    replica: tuple[int, int] | None = None,
    notifier: Notifier | None = None,
) -> Worker:
    """A worker over files from ``source`` that go to ``destination`` (call under ``model_lock``); ``copy``: the
    source is on another file system, claims copy then remove (``copy_claims``). ``messages``: the queue the
    source's wake-ups were bound to; ``replica`` (rank, world size): one of a group, which maintains and saves
    at the group's barriers only (rank 0) and numbers its journal rank-strided."""
    p = settings.paths
    engine, store, predictions = _common(settings)
    work = WorkArea(p.work, p.failed, owner=p.checkpoints)
    session = work.open_session(source.folder, destination)
    claimer = CopyClaimer(session, source.folder) if copy else Claimer(session)
    feed = FileFeed(source, claimer, settings.model.input_dim, settings.model.num_classes, _limits(settings))
    # One info line per sample would flood journald under backlog: predictions.jsonl carries each sample,
    # daemon.progress (every 5 s while busy) and checkpoint.saved tell the story; sample.processed is debug.
    pipeline = Pipeline(
        engine, predictions, p.failed, settings.train.max_batch, sample_log_level="debug",
        retry_seconds=settings.checkpoint.retry_seconds, plasticity=replica is None, replica=replica,
    )  # fmt: skip
    held = f"replica {replica[0]} of {replica[1]}: rank 0 saves at the group's barriers" if replica else ""
    return Worker(
        settings, engine, store, feed, pipeline, predictions, notifier or Notifier(), work=work, session=session,
        mode=mode, messages=messages or queue.SimpleQueue(), held=held,  # type: ignore[arg-type]
    )  # fmt: skip


def run_inbox(settings: Settings) -> RunSummary:
    """The daemon: watch ``paths.inbox`` until SIGTERM/SIGINT."""
    p = settings.paths
    check_folders(_data_folders(settings, "inbox", "processed", "failed", "work", "checkpoints", "state"), "paths.inbox")
    with model_lock(p.checkpoints):
        messages: queue.SimpleQueue[Message] = queue.SimpleQueue()  # the worker's: the watcher's wake-ups go there
        source = InboxSource(p.inbox, settings.daemon.settle_seconds, wake=lambda: messages.put(Wake()))
        worker = build_file_worker(settings, source, p.processed, messages=messages)
        worker.heartbeat.ready_facts.update(watching=str(p.inbox.absolute()), destination=str(p.processed.absolute()))
        return _serve(worker, settings, source)


def run_ingest(settings: Settings, folder: Path, destination: Path, progress: bool = True) -> RunSummary:
    """One-shot: the same pipeline over ``folder``, files to ``destination``; returns when it is drained."""
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise UsageError(f"ingest: FOLDER {folder.absolute()} {what}")
    folders = {"FOLDER": folder, "--to": destination, **_data_folders(settings, "failed", "work", "checkpoints", "state")}
    check_separate(folders)
    prepare_folders(folders)
    copy = os.stat(folder).st_dev != os.stat(settings.paths.work).st_dev  # another file system: copy, then claim
    p = settings.paths
    with model_lock(p.checkpoints):
        source = FolderSource(folder.resolve(), settle_seconds=0.0)
        worker = build_file_worker(settings, source, destination, mode="burst", copy=copy)
        if copy:
            get_logger("ingest").info(
                "ingest.copying", folder=str(folder.absolute()), work=str(p.work.absolute()),
                note="FOLDER is on another file system than paths.work: each file is copied into the work area and "
                "removed from FOLDER once the copy is durable",
            )  # fmt: skip
        worker.heartbeat.ready_facts.update(watching=str(folder.absolute()), destination=str(destination.absolute()))
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


def _load_dataset(folder: Path, split: str) -> Split:
    """A split of Fashion-MNIST; a corrupt or unreadable file is a DatasetError naming it, not a traceback."""
    import gzip
    import zlib

    try:
        return load_split(folder, split)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        if isinstance(exc, PlasticdError):
            raise
        raise DatasetError(
            f"the Fashion-MNIST {split} files in {folder} cannot be read ({type(exc).__name__}: {exc}); "
            "reinstall them (apt-get install --reinstall dataset-fashion-mnist) or set paths.dataset"
        ) from None


def run_stream(settings: Settings, epochs: int, limit: int | None) -> RunSummary:
    """The built-in demo: the Fashion-MNIST training stream through the same worker, then the test set."""
    p = settings.paths
    train, test = _load_dataset(p.dataset, "train"), _load_dataset(p.dataset, "test")
    check_separate(_data_folders(settings, "failed", "checkpoints", "state"))
    with model_lock(p.checkpoints):
        engine, store, predictions = _common(settings)
        feed = StreamFeed(train, settings.runtime.seed, epochs, limit)
        # 60k demo samples: their per-sample events go to debug; daemon.progress tells the story
        pipeline = Pipeline(
            engine, predictions, p.failed, settings.train.max_batch, sample_log_level="debug",
            retry_seconds=settings.checkpoint.retry_seconds,
        )  # fmt: skip
        worker = Worker(settings, engine, store, feed, pipeline, predictions, Notifier(), mode="burst")
        worker.heartbeat.ready_facts.update(watching=f"fashion-mnist stream ({p.dataset}), {epochs} pass(es)")
        summary = _serve(worker, settings, None)
    if summary.samples == 0 and feed.exhausted:
        get_logger("stream").warning(
            "stream.already_learned",
            samples=feed.total,
            epochs=epochs,
            checkpoints=str(p.checkpoints),
            message=f"the model in {p.checkpoints} has already learned these {feed.total} samples; nothing was "
            "trained, the test set is evaluated only (to learn again: move the checkpoints folder aside, or raise --epochs)",
        )
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
