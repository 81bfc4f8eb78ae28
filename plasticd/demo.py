"""``plasticd run --source fashion-mnist``: the built-in stream, test-then-train, with live accuracy."""

from __future__ import annotations

import time

import torch

from plasticd.config import Settings
from plasticd.datasets import load_split
from plasticd.engine import Engine, RewireReport
from plasticd.log import get_logger
from plasticd.stream import Rate, stream_batches

PROGRESS_EVERY_S = 5.0


def log_rewire(log, report: RewireReport, steps: int) -> None:
    """One ``plasticity.rewired`` event per cycle (or ``plasticity.skipped``)."""
    if report.skipped:
        log.info("plasticity.skipped", reason=report.skipped, steps=steps)
        return
    log.info(
        "plasticity.rewired",
        pruned=report.pruned,
        regrown=report.regrown,
        active=report.active_after,
        eligible=report.eligible,
        estimate_ms=round(report.estimate_ms, 2),
        rewire_ms=round(report.rewire_ms, 2),
        steps=steps,
    )


def run_fashion_mnist(settings: Settings, epochs: int = 1, limit: int | None = None, batch_size: int = 1) -> int:
    log = get_logger("stream")
    train = load_split(settings.paths.dataset, "train")
    test = load_split(settings.paths.dataset, "test")
    engine = Engine(settings)
    log.info(
        "stream.started",
        source="fashion-mnist",
        samples=min(limit or len(train), len(train)) * epochs,
        device=str(engine.device),
        neurons=engine.cfg.neurons,
        iterations=engine.cfg.iterations,
        active_connections=engine.active_connections,
        batch=batch_size,
    )
    rate = Rate()
    next_report = time.monotonic() + PROGRESS_EVERY_S
    for batch in stream_batches(train, batch_size, settings.runtime.seed, epochs, limit):
        result = engine.step(batch.x, batch.y)
        rate.add(len(batch.y))
        if result.rewire is not None:
            log_rewire(log, result.rewire, engine.steps)
        if time.monotonic() >= next_report:
            next_report += PROGRESS_EVERY_S
            m = engine.snapshot()
            log.info(
                "stream.progress",
                samples=m.samples_seen,
                accuracy=round(m.accuracy or 0.0, 4),
                window_accuracy=round(m.window_accuracy or 0.0, 4),
                loss=round(m.loss or 0.0, 4),
                samples_per_s=round(rate.per_second, 1),
            )
    m = engine.snapshot()
    test_accuracy = engine.evaluate(torch.from_numpy(test.x), torch.from_numpy(test.y))
    log.info(
        "stream.finished",
        samples=m.samples_seen,
        trained=m.samples_trained,
        prequential_accuracy=round(m.accuracy or 0.0, 4),
        window_accuracy=round(m.window_accuracy or 0.0, 4),
        test_accuracy=round(test_accuracy, 4),
        samples_per_s=round(rate.per_second, 1),
        rewires=engine.rewires,
        active_connections=engine.active_connections,
    )
    return 0
