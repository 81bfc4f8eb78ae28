"""Pieces of refusal messages: what was found, said briefly and without echoing hostile input at length."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def short(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line, bounded: parser messages may quote the hostile input."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: Any) -> str:
    """``value``'s kind in JSON words ("null", "a string", ...)."""
    return "null" if value is None else kind_name(type(value))


def kind_name(kind: type) -> str:
    names = {bool: "a boolean", str: "a string", dict: "a mapping", list: "a list", tuple: "a tuple",
             type(None): "null", int: "an integer", float: "a number"}  # fmt: skip
    return names.get(kind, kind.__name__)


def kinds(found: set[type]) -> str:
    """Several kinds, sorted, for a message."""
    return ", ".join(sorted(map(kind_name, found)))


def listing(items: Iterable[Any], limit: int = 5) -> str:
    """The first ``limit`` items and how many more."""
    shown = [repr(item) if isinstance(item, str) else str(item) for item in items]
    return ", ".join(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")
