"""What every benchmark shares: its results file and mean ± std over seeds (option types: ``plasticd/commands.py``).

One writer for every result file, so they all look alike (UTF-8 JSON,
indented by 2) and a benchmark never formats a file of its own.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from plasticd.commands import SubParsers, positive_int

__all__ = ["SubParsers", "mean_std", "positive_int", "run_record", "write_results"]


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
