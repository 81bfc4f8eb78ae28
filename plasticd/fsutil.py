"""File-system helpers that every durable write in plasticd goes through.

Nothing here knows about samples or models: a folder fsync (renames made
durable), an atomic JSON write (readers never see half a file), and a move
that never overwrites (a taken name becomes ``stem~N.ext``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from plasticd.errors import WorkAreaError

NAME_MAX = 255  # bytes, the usual limit of one path component
SEP = "~"  # between a name and its uniquifying counter (and a claim's sequence number)
TMP_MARK = ".tmp-"  # temp files are ``.<name>.tmp-<pid>``: dot files, which no source takes


def fsync_dir(folder: Path) -> None:
    """Make renames into or out of ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, payload: dict, durable: bool = True) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same folder: readers never see half a file.
    ``durable=False`` skips the fsync: for files rewritten often whose loss in a power cut costs nothing."""
    pid = f"-{os.getpid()}"
    tmp = path.with_name(fit_name(path.name, ".tmp-", reserve=len(pid)) + pid)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cut(raw: bytes, size: int) -> bytes:
    """The first ``size`` bytes of ``raw`` or fewer: never the leading bytes of a UTF-8 character without its tail
    (a cut inside a character makes an invalid name on disk and a lone surrogate wherever the name is shown)."""
    if len(raw) <= size:
        return raw
    cut = max(size, 0)
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:  # raw[cut] continues the character before it: cut before that one
        cut -= 1
    return raw[:cut]


def fit_name(name: str, prefix: str, reserve: int = 0) -> str:
    """``prefix + name``, ``name``'s stem shortened to fit NAME_MAX bytes with ``reserve`` bytes to spare
    (for a suffix the caller adds: a sidecar's ``.error.json``, a temp file's pid); cut on a character boundary."""
    raw = os.fsencode(name)
    room = NAME_MAX - len(os.fsencode(prefix)) - reserve
    if len(raw) > room:
        stem, ext = os.path.splitext(name)
        ext_raw = _cut(os.fsencode(ext), 16)
        raw = _cut(os.fsencode(stem), room - len(ext_raw)) + ext_raw
    return prefix + os.fsdecode(raw)


def same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def candidate_names(name: str, reserve: int = 0) -> Iterator[str]:
    """``name``, then ``stem~1.ext``, ``stem~2.ext`` …, each shortened to leave ``reserve`` bytes of NAME_MAX."""
    stem, ext = os.path.splitext(name)
    for n in range(10_000):
        yield fit_name(name if n == 0 else f"{stem}{SEP}{n}{ext}", "", reserve)


def create_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as a *new* file at ``path``, durably, never replacing one (FileExistsError if taken).

    Written under a temp name in the same folder (marked with TMP_MARK and the pid, so a crash's leftover
    is recognisable), fsynced, then given its name with ``link_new``."""
    pid = f"{TMP_MARK}{os.getpid()}"
    tmp = path.with_name(fit_name(path.name, ".", reserve=len(pid)) + pid)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        link_new(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def link_new(src: Path, target: Path) -> None:
    """Give ``src`` the new name ``target`` without ever replacing what is there (FileExistsError then).

    ``link`` where the file system allows it; across file systems (a data folder on
    another mount) a copy to a temp name in ``target``'s folder, made durable, then
    linked into place: a reader never sees a partial file under ``target``. What
    cannot be linked or copied (a folder) is renamed: then ``src`` is gone, so the
    caller's unlink of ``src`` must allow for that. OSError (ENOSPC, EIO …) leaves
    no temp file behind.
    """
    try:
        os.link(src, target, follow_symlinks=False)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EISDIR):
            raise
        cross_device = exc.errno == errno.EXDEV
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "File exists", str(target))
    if not (cross_device and stat.S_ISREG(os.lstat(src).st_mode)):
        os.rename(src, target)  # what cannot be linked (a folder, a file system without hard links): ``src`` is gone
        return
    tmp = target.with_name(fit_name(target.name, ".", reserve=len(TMP_MARK) + 12) + f"{TMP_MARK}{os.getpid()}")
    try:
        shutil.copyfile(src, tmp, follow_symlinks=False)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EMLINK) and not os.path.lexists(target):
                os.rename(tmp, target)  # no hard links on that file system: a rename (a race could replace)
                return
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def move_no_overwrite(src: Path, folder: Path, name: str, reserve: int = 0) -> Path:
    """Move ``src`` into ``folder`` under ``name``, or ``stem~N.ext`` if that is taken; never overwrites.
    Names are shortened to leave ``reserve`` bytes of NAME_MAX for a suffix the caller will add.

    ``link_new`` + ``unlink``: the new name fails if it exists, and a crash in between
    leaves two names of one file, which the next call finishes (or, across file
    systems, a complete copy next to the original, which is never lost).
    """
    for candidate in candidate_names(name, reserve):
        target = folder / candidate
        try:
            link_new(src, target)
        except FileExistsError:
            if same_file(src, target):  # a crash came between our link and unlink: finish that move
                os.unlink(src)
                return target
            continue
        with contextlib.suppress(FileNotFoundError):  # renamed, not linked
            os.unlink(src)
        return target
    raise WorkAreaError(f"no free name for {name!r} in {folder}")


def stray_temp(name: str) -> bool:
    """Whether ``name`` is a temp file one of these helpers leaves only when killed mid-write."""
    return name.startswith(".") and TMP_MARK in name
