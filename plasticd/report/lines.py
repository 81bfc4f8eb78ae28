"""Big JSON-lines files read as blocks of whole lines: a few MB at a time, never the whole file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

BLOCK_BYTES = 4 << 20  # ~20k journal records per block: tens of MB of Python objects at the peak


def blocks(path: Path, size: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Blocks of whole lines (the last one may lack its newline: a torn tail is the parser's to refuse)."""
    with open(path, "rb") as handle:
        carry = b""
        while chunk := handle.read(size):
            chunk = carry + chunk
            cut = chunk.rfind(b"\n")
            if cut < 0:
                carry = chunk
                continue
            carry = chunk[cut + 1 :]
            yield chunk[:cut]
        if carry.strip():
            yield carry


def parse_lines(lines: list[bytes]) -> tuple[list, int]:
    """The JSON values of ``lines`` and how many did not parse (one torn line must not cost its block).

    The whole block is parsed as one array first (one call into orjson); only a block
    with a bad line falls back to line by line.
    """
    lines = [line for line in lines if line.strip()]
    try:
        return orjson.loads(b"[" + b",".join(lines) + b"]"), 0
    except orjson.JSONDecodeError:
        values, bad = [], 0
        for line in lines:
            try:
                values.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                bad += 1
        return values, bad
