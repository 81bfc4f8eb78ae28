"""What every sub-command module shares to register itself: the sub-parsers protocol and option types.

A neutral home (no benchmark, tool or service code) so the operator tools, the
benchmarks and the report each register their commands the same way without
depending on one another.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol


class SubParsers(Protocol):
    """The object ``ArgumentParser.add_subparsers`` returns: a command module adds its sub-commands to it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
