"""Messages posted to the worker, the only thread that touches the model.

The watchdog thread and scheduler jobs never act themselves: they post one
of these and the worker handles it between steps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wake:
    """Files may be ready in the inbox (a file-system event)."""


@dataclass(frozen=True)
class Rescan:
    """List the inbox again: events can be dropped."""


@dataclass(frozen=True)
class Rewire:
    """Run a plasticity cycle."""

    reason: str


@dataclass(frozen=True)
class Checkpoint:
    """Save the model (and move covered files on)."""

    reason: str


@dataclass(frozen=True)
class Merge:
    """A task boundary: fold the task vector and apply the MagMax merge (idle, sample count or drift)."""

    reason: str


@dataclass(frozen=True)
class Grow:
    """Run a growth check: retire dead neurons, grow new ones on a learning plateau (growth_policy.py)."""

    reason: str


Message = Wake | Rescan | Rewire | Checkpoint | Merge | Grow
