"""``plasticd bench detectors``: which change detector should watch the prequential error.

plasticd learns each stream of the drift suite (micro-batches of
``train.max_batch``, the daemon's backlog, with ``drift.detector = off`` so no
reaction changes the error sequence), and every candidate detector is run
over the same 0/1 prequential errors:

* ``adwin``, ``kswin``, ``page_hinkley`` as plasticd runs them
  (``learn/drift.DriftMonitor``: only a *rise* of the error counts, alarms at
  least ``drift.min_samples`` apart);
* ``adwin-raw``: ADWIN's every detection, rise or fall, to show why the rule
  is there.

Per detector: alarms within ``--window`` samples after a known abrupt change,
or around the centre of a gradual one (hits), the delay of the first, known
changes missed, every other alarm (false: on the real, incremental and
control streams every alarm is false, since they have no known change), and
the detector's cost per sample.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plasticd.bench.common import SubParsers, positive_int, run_record, write_results
from plasticd.bench.streams import STREAMS
from plasticd.config import Settings
from plasticd.threads import set_threads

if TYPE_CHECKING:
    import numpy as np

DETECTORS = ("adwin", "kswin", "page_hinkley", "adwin-raw")
ABRUPT = ("agrawal-abrupt", "sea-abrupt", "stagger-abrupt", "sine-abrupt", "fashion-mnist-permuted")
GRADUAL = ("agrawal-gradual", "led-gradual")  # their known position is the centre of a 2,000-sample transition


@dataclass
class Tally:
    hits: int = 0
    missed: int = 0
    false: int = 0
    delays: list[int] = field(default_factory=list)


def alarms_of(detector: str, errors: np.ndarray, settings: Settings) -> list[int]:
    """Sample positions (0-based) at which ``detector`` raises an alarm on ``errors``, fed 8 at a time (see ``timed``)."""
    from plasticd.learn.drift import DriftMonitor, make_detector

    if detector == "adwin-raw":
        raw = make_detector(settings.drift.model_copy(update={"detector": "adwin"}))
        found = []
        for i, e in enumerate(errors.tolist()):
            raw.update(e)
            if raw.drift_detected:
                found.append(i)
        return found
    monitor = DriftMonitor(settings.drift.model_copy(update={"detector": detector}))
    found = []
    for i in range(0, errors.size, 8):
        alarm = monitor.observe(errors[i : i + 8], i)
        if alarm is not None:
            found.append(alarm.trained - 1)
    return found


def timed(detector: str, errors: np.ndarray, settings: Settings) -> tuple[list[int], float]:
    """``alarms_of`` and its cost in microseconds per sample."""
    t0 = time.perf_counter()
    alarms = alarms_of(detector, errors, settings)
    return alarms, (time.perf_counter() - t0) / max(errors.size, 1) * 1e6


def tally(alarms: list[int], drifts: tuple[int, ...], window: int, lead: int = 0) -> Tally:
    """Hits (an alarm from ``lead`` samples before a change to ``window`` after it; the first counts), misses, false alarms."""
    t = Tally()
    matched: set[int] = set()
    for d in drifts:
        inside = [a for a in alarms if d - lead <= a < d + window]
        if inside:
            t.hits += 1
            t.delays.append(inside[0] - d)
            matched.update(inside)
        else:
            t.missed += 1
    t.false = sum(a not in matched for a in alarms)
    return t


def errors_of(stream_name: str, settings: Settings, samples: int | None) -> tuple[np.ndarray, tuple[int, ...]]:
    """The prequential 0/1 errors of plasticd on one stream (no drift reaction), and its known abrupt changes."""
    import numpy as np
    import torch

    from plasticd.bench.contenders import stream_settings
    from plasticd.bench.streams import build_stream
    from plasticd.learn.engine import Engine

    set_threads(1)
    stream = build_stream(stream_name, samples, settings.runtime.seed, settings.paths.dataset)
    s = stream_settings(settings, stream, settings.runtime.seed)
    s = s.model_copy(update={"drift": s.drift.model_copy(update={"detector": "off"})})
    engine = Engine.from_settings(s, device="cpu")
    x, b = torch.from_numpy(stream.x), s.train.max_batch
    errors = np.zeros(stream.n)
    for i in range(0, stream.n, b):
        errors[i : i + b] = engine.step(x[i : i + b], stream.y[i : i + b]).predicted != stream.y[i : i + b]
    return errors, stream.drifts if stream_name in ABRUPT + GRADUAL else ()


def run_detectors(settings: Settings, streams: list[str], samples: int | None, window: int) -> dict[str, Any]:
    """Every detector over every stream's errors: per stream and detector the alarms, and the totals."""
    per_stream: dict[str, dict[str, Any]] = {}
    totals = {d: Tally() for d in DETECTORS}
    cost: dict[str, list[float]] = {d: [] for d in DETECTORS}
    for name in streams:
        errors, drifts = errors_of(name, settings, samples)
        per_stream[name] = {"drifts": list(drifts), "samples": int(errors.size)}
        lead = window if name in GRADUAL else 0
        for d in DETECTORS:
            alarms, us = timed(d, errors, settings)
            cost[d].append(us)
            t = tally(alarms, drifts, window, lead)
            per_stream[name][d] = {"alarms": alarms, "hits": t.hits, "missed": t.missed, "false": t.false, "delays": t.delays}
            total = totals[d]
            total.hits, total.missed, total.false = total.hits + t.hits, total.missed + t.missed, total.false + t.false
            total.delays += t.delays
        print(f"  {name:24s} " + "  ".join(f"{d} {len(per_stream[name][d]['alarms'])}" for d in DETECTORS), flush=True)
    summary = {
        d: {
            "hits": t.hits,
            "missed": t.missed,
            "false": t.false,
            "delays": t.delays,
            "us_per_sample": sum(cost[d]) / len(cost[d]),
        }
        for d, t in totals.items()
    }
    return {"streams": per_stream, "summary": summary}


def format_table(result: dict[str, Any], window: int) -> str:
    rows = [
        f"| detector | changes found (within {window}) | missed | false alarms | median delay | µs per sample |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d, s in result["summary"].items():
        delays = sorted(s["delays"])
        median = str(delays[len(delays) // 2]) if delays else "-"
        rows.append(f"| `{d}` | {s['hits']} | {s['missed']} | {s['false']} | {median} | {s['us_per_sample']:.1f} |")
    return "\n".join(rows)


def register(subparsers: SubParsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "detectors",
        help="which change detector to watch the prequential error with: hits, delays and false alarms",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--streams", nargs="+", choices=STREAMS, default=list(STREAMS), metavar="NAME",
        help="streams of the drift suite (default all)",
    )  # fmt: skip
    p.add_argument("--samples", type=positive_int, help="samples per stream (default: the drift suite's)")
    p.add_argument("--window", type=positive_int, default=1000, help="an alarm this soon after a change is a hit (default 1000)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the alarms of every detector on every stream as JSON")
    p.set_defaults(run=run)
    return p


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``plasticd bench detectors`` with its parsed options."""
    print(f"plasticd bench detectors: {len(args.streams)} streams, micro-batches of {settings.train.max_batch}", flush=True)
    result = run_detectors(settings, list(args.streams), args.samples, args.window)
    print()
    print(format_table(result, args.window))
    if args.json:
        options = {"streams": list(args.streams), "samples": args.samples, "window": args.window}
        write_results(args.json, {**run_record(_Options(**options), settings.model_dump_json()), **result})
    return 0


@dataclass
class _Options:
    streams: list[str]
    samples: int | None
    window: int
