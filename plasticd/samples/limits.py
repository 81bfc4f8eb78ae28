"""The caps one sample file must stay within (a leaf: every decoding stage reads them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Caps for one sample file; the size caps are checked before the work they bound."""

    max_file_bytes: int = 16 * 1024 * 1024  # on-disk size, checked (fstat) before reading
    max_samples: int = 50_000  # samples per file
    max_abs_value: float = 1e15  # |x| above this is rejected: keeps float32 statistics finite (see LimitSettings)
    max_json_depth: int = 64  # nesting depth of JSON arrays and objects
    max_uncompressed_bytes: int = 256 * 1024 * 1024  # sum of zip member sizes; declared size of one array


DEFAULT_LIMITS = Limits()  # frozen: one shared instance is safe as a default argument
