"""Named exceptions. A leaf module: it imports nothing from plasticd.

Every error a user can cause carries a message that says what was expected
and what was found, and names the file or field at fault.
"""

from __future__ import annotations


class PlasticdError(Exception):
    """Base class of every error plasticd raises on purpose."""


class ConfigError(PlasticdError):
    """The settings (file, environment or flags) are invalid."""


class UsageError(PlasticdError):
    """The caller asked for something that does not exist or cannot be (exit code 2), e.g. a checkpoint SEQ
    that is not in the folder, or an ingest FOLDER that is not a folder."""


class DatasetError(PlasticdError):
    """A dataset is missing or its files are malformed."""


class SampleError(PlasticdError):
    """A sample file cannot be used: it is quarantined, the daemon goes on.

    ``reason`` is a short machine-readable code (e.g. ``"non_finite"``) that
    lands in the sidecar and in the log event; the message is for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CheckpointError(PlasticdError):
    """A checkpoint cannot be written, read or verified."""


class CheckpointNoSpaceError(CheckpointError):
    """A checkpoint did not fit on its file system, even after the older checkpoints made room.

    ``needed`` is the bytes the checkpoint needs (its tensors and record): the
    daemon retries as soon as that much is free again.
    """

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class NonFiniteError(PlasticdError):
    """A step would have made the network non-finite; nothing was changed."""


class WorkAreaError(PlasticdError):
    """The work area is unusable (e.g. it belongs to another model), or a file has no free name."""


class ModelLockedError(PlasticdError):
    """Another process owns the model in this checkpoint folder."""
