"""Where sample files come from: a watched inbox, or a folder drained once.

Inbox: a watchdog observer turns file-system events into *hints* and wakes
the worker; it never reads or moves a file itself. Because watchdog sends
nothing for files that were there before it started, and can drop events
when the kernel queue overflows, the worker also scans the folder at
start-up and every ``daemon.rescan_seconds``.

Files still being written are never taken: names starting with a dot or
ending in ``.tmp``/``.part`` are ignored (producers write those, then rename
into place); a file announced by a rename or a close-after-write event is
ready at once; one found only by a scan must be ``settle_seconds`` old.
The daemon's own outputs (``<name>.pred.json`` results, found when a copy of
``data_processed/`` is ingested) are never samples: they are skipped, with a
note (``source.skipped_results``) the first time each is seen.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver  # `Observer` is a platform-chosen variable, not a type

from plasticd.errors import PlasticdError
from plasticd.log import get_logger

IGNORED_SUFFIXES = (".tmp", ".part")
OWN_OUTPUT_SUFFIXES = (".pred.json",)  # results.RESULT_SUFFIX: what the daemon writes next to processed files
MOVE_PAIRING_DELAY_S = 0.002


def _shorten_move_pairing() -> None:
    """Claiming moves a file *out of* the inbox: inotify reports an IN_MOVED_FROM with no
    IN_MOVED_TO in a watched folder. watchdog holds such an event up to 0.5 s hoping to
    pair it, and its queue is FIFO, so every hint behind it waits too: 0.5 s of added
    latency per claim. Both halves of a real rename arrive in the same read, so pairing
    within 2 ms loses nothing."""
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # not Linux, or another watchdog layout: keep its default
        return
    InotifyMoveEventGrouper.delay = MOVE_PAIRING_DELAY_S


def _observer() -> BaseObserver:
    """inotify with full move events where available: a file renamed in from another folder then
    arrives as a move (watchdog otherwise reports it as a *create*, indistinguishable from a file
    opened for writing, and it would wait for a rescan)."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:  # not Linux
        return Observer()
    return InotifyObserver(generate_full_events=True)


def is_candidate(name: str) -> bool:
    """Whether a directory entry may be a finished sample file (not a producer's work in progress)."""
    lower = name.lower()
    return bool(name) and not name.startswith(".") and not lower.endswith(IGNORED_SUFFIXES + OWN_OUTPUT_SUFFIXES)


def is_own_output(name: str) -> bool:
    """Whether a directory entry is one of the daemon's own outputs (a per-file result), never a sample."""
    return not name.startswith(".") and name.lower().endswith(OWN_OUTPUT_SUFFIXES)


class FolderSource:
    """Candidates from a folder listing, oldest first; the basis of both sources."""

    def __init__(self, folder: Path, settle_seconds: float = 0.0) -> None:
        self.folder = folder
        self.settle_seconds = settle_seconds
        self._ready: OrderedDict[str, float] = OrderedDict()  # names ready to claim, arrival order: when first seen
        self._lock = threading.Lock()
        self._skipped: set[str] = set()  # the daemon's own outputs seen here (each noted once)

    def _mark_ready(self, name: str) -> None:
        with self._lock:
            self._ready.setdefault(name, time.time())

    def scan(self) -> int:
        """List the folder; add every finished candidate. Returns how many are ready.

        Raises PlasticdError naming the folder when it cannot be listed (deleted, not a folder, no permission).
        """
        try:
            return self._list()
        except OSError as exc:
            raise PlasticdError(f"folder {self.folder} cannot be listed: {exc}") from exc

    def _list(self) -> int:
        now = time.time()
        found = []
        skipped = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if not is_candidate(entry.name):
                    if is_own_output(entry.name) and entry.name not in self._skipped:
                        skipped.append(entry.name)
                    continue
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue  # claimed or removed meanwhile
                if abs(now - mtime) >= self.settle_seconds:  # a future mtime (clock skew, a copied file) settles too
                    found.append((mtime, entry.name))
        if skipped:
            self._skipped.update(skipped)
            get_logger("source").info(
                "source.skipped_results", folder=str(self.folder), files=len(skipped), first=sorted(skipped)[:5],
                note="per-file results the daemon wrote itself (<name>.pred.json) are not samples: left where they are",
            )  # fmt: skip
        with self._lock:
            for _, name in sorted(found):
                self._ready.setdefault(name, now)
            return len(self._ready)

    def take(self, limit: int) -> list[Path]:
        """Up to ``limit`` ready paths, oldest first; each is handed out once."""
        return [path for path, _ in self.take_seen(limit)]

    def take_seen(self, limit: int) -> list[tuple[Path, float]]:
        """``take``, each path with the wall-clock time this source first saw it ready (an event, or a scan once
        settled): where a prediction's ``latency_ms`` starts."""
        with self._lock:
            taken: list[tuple[str, float]] = []
            while self._ready and len(taken) < limit:
                taken.append(self._ready.popitem(last=False))
        return [(self.folder / name, seen) for name, seen in taken]

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._ready)

    def waiting_since(self) -> float | None:
        """Wall-clock time this process first saw the oldest file still waiting to be taken; None when none waits."""
        with self._lock:
            return next(iter(self._ready.values()), None)


class _Hints(FileSystemEventHandler):
    def __init__(self, source: InboxSource) -> None:
        self.source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            path = os.fsdecode(event.dest_path)
        elif isinstance(event, FileClosedEvent):
            path = os.fsdecode(event.src_path)
        else:
            return
        folder, name = os.path.split(path)
        if Path(folder) != self.source.folder or not is_candidate(name):
            return
        self.source._mark_ready(name)
        self.source.wake()


class InboxSource(FolderSource):
    """The daemon's inbox: events wake the worker, scans make sure nothing is missed."""

    def __init__(self, folder: Path, settle_seconds: float, wake: Callable[[], None]) -> None:
        super().__init__(folder, settle_seconds)
        self.wake = wake
        self._observer: BaseObserver | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder being watched
        self.log = get_logger("inbox")

    def start(self) -> None:
        _shorten_move_pairing()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder = self.folder.resolve()
        self._identity = _identity(self.folder)
        observer = _observer()
        # Only the events that can make a file ready (a rename into the inbox, from
        # inside or outside it; a close after writing): the kernel then does not wake
        # us (and take the GIL from the worker) for every create/open/read/modify.
        observer.schedule(_Hints(self), str(self.folder), recursive=False, event_filter=[FileMovedEvent, FileClosedEvent])
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def scan(self) -> int:
        """As FolderSource.scan, but a vanished inbox is recreated (and watched again) with a loud event.

        An inbox deleted and made again by someone else is a new folder that the
        old watch does not see: it is watched again too. Any other failure to list
        it (not a folder any more, no permission) stops the daemon with a clear error.
        """
        try:
            if self._observer is not None and not self._observer.is_alive():
                raise FileNotFoundError(self.folder)
            if self._observer is not None and (_identity(self.folder) != self._identity or not self._watching()):
                self.log.warning("inbox.replaced", folder=str(self.folder), action="watched again")
                self.stop()
                self.start()
            return self._list()
        except FileNotFoundError:
            self.log.error("inbox.missing", folder=str(self.folder), action="recreated")
            self.stop()
            self.start()
            return self._list()
        except OSError as exc:
            raise PlasticdError(
                f"inbox {self.folder} cannot be listed: {exc}; fix it (it must be a folder plasticd may read and write)"
            ) from exc

    def _watching(self) -> bool:
        """False once the watch ended: inotify ends it when the folder is deleted (a new one may reuse the inode)."""
        observer = self._observer
        return observer is not None and all(emitter.is_alive() for emitter in observer.emitters)


def _identity(folder: Path) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino
