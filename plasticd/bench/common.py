"""What every benchmark shares: its results file, mean ± std over seeds, and its option types.

One writer for every result file, so they all look alike (UTF-8 JSON,
indented by 2) and a benchmark never formats a file of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol


class SubParsers(Protocol):
    """The object ``ArgumentParser.add_subparsers`` returns: a benchmark adds its sub-command to it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run_record(opts: object, settings_json: str, **results: object) -> dict[str, Any]:
    """A benchmark's options (paths as strings), the settings it ran with and its results, as one JSON document."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}  # type: ignore[call-overload]
    return {"options": options, "settings": json.loads(settings_json), **results}


def write_results(path: Path, results: object) -> None:
    """Write one benchmark's results file (``--json FILE``)."""
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")


def mean_std(values: Sequence[float], fmt: str = "{:.4f}", scale: float = 1.0) -> str:
    """``mean ± sample std`` of ``values × scale``, each as ``fmt``; only the mean for a single value."""
    scaled = [v * scale for v in values]
    mean = fmt.format(statistics.mean(scaled))
    return f"{mean} ± {fmt.format(statistics.stdev(scaled))}" if len(scaled) > 1 else mean
