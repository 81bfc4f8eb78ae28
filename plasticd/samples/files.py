"""Reading one sample file without trusting the name: regular files only, size checked before reading.

A sample file comes from anyone who can write to the watched folder. So a symlink is never
followed, a FIFO or device is never read (nor, for a device, even opened), a hard link (which
could alias a checkpoint) is refused, and the size is checked on the open descriptor, so a
swap between the check and the read cannot smuggle in another file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from plasticd.errors import SampleError

SUPPORTED_SUFFIXES: tuple[str, ...] = (".json", ".pt", ".pth", ".npz")  # matched case-insensitively
_READ_CHUNK = 1 << 20  # bytes per read() call


def supported_suffix(suffix: str) -> str:
    """``suffix`` lower-cased, if it names a supported format."""
    if suffix.lower() not in SUPPORTED_SUFFIXES:
        raise SampleError("unsupported_extension", f"expected one of {', '.join(SUPPORTED_SUFFIXES)}, found {suffix!r}")
    return suffix.lower()


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, refusing symlinks, FIFOs, devices, directories and hard links without blocking."""
    try:
        _check_regular(os.lstat(path))  # so a device node is never even opened
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise _open_error(exc) from exc
    try:
        info = os.fstat(fd)  # the descriptor is what gets read: this closes the race with a swap after lstat
        _check_regular(info)
        check_file_size(info.st_size, max_bytes)
        return _read_exactly(fd, info.st_size)
    finally:
        os.close(fd)


def check_file_size(size: int, max_bytes: int) -> None:
    """Refuse a file of ``size`` bytes if it is over the cap (the cap itself is allowed)."""
    if size > max_bytes:
        raise SampleError("too_large", f"expected at most {max_bytes} bytes, found {size}")


def _open_error(exc: OSError) -> SampleError:
    if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink swapped in after lstat
        return SampleError("not_a_regular_file", "expected a regular file, found a symbolic link")
    return SampleError("unreadable", f"expected a readable file, found: {exc.strerror or exc}")


def _check_regular(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SampleError("not_a_regular_file", f"expected a regular file, found {_file_kind(info.st_mode)}")
    if info.st_nlink > 1:
        raise SampleError("hardlink", f"expected a file with one name, found {info.st_nlink} hard links to it")


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISLNK: "a symbolic link", stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO",
             stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}  # fmt: skip
    return next((name for test, name in kinds.items() if test(mode)), f"file mode {mode:o}")


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, _READ_CHUNK))
        if not chunk:
            raise SampleError("truncated", f"expected {size} bytes (its size when opened), found {size - remaining}")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
