"""Ask the live model: ``POST /predict`` on the metrics server, answered from a snapshot the worker publishes.

The worker stays the only thread that touches the engine. At the end of a turn
of its loop in which the model changed, it publishes a *snapshot*: the
predicting copy's weights and the input scaler, cloned (``Engine.predictor``),
with the facts an answer names. A request thread decodes the body with the
daemon's own decoders and limits and predicts from the newest snapshot under
``torch.inference_mode``; it never waits for the worker, and what it predicts is
never learned from (it does not enter the pipeline, the journal or a checkpoint).

Freshness. A snapshot is published at the end of a turn that changed the model
(a micro-batch, a rewiring, growth or merge, a checkpoint), once
``metrics.snapshot_ms`` have passed since the previous one, or at once when the
queue is empty; never more often than every 20 clone times (publishing costs
the worker at most ~5% of its time whatever the network's size). So while it
learns, an answer reflects the model as it was at most ``snapshot_ms`` (or 20
clone times) plus one micro-batch before the request; when it has nothing
queued, the model as it is. ``checkpoint`` in the answer is the checkpoint
the snapshot's model equals (then ``plasticd predict --checkpoint SEQ`` gives
the same bytes), or null when it has learned since. The response headers say
more: ``X-Plasticd-Samples-Trained`` (the snapshot's model had learned this many
samples) and ``X-Plasticd-Lag-Ms`` (how long ago the model first changed past the
snapshot; 0 when the snapshot is the model as it is).

Concurrency. The server runs one thread per request; while the worker runs
Python code it holds the GIL, which a waiting thread gets after the interpreter's
switch interval: 5 ms by default, lowered to 0.5 ms while POST /predict is served
(threads that wait for nothing pay nothing for it); their forward passes take
one lock, so at most one prediction runs beside the worker (a batch request
parallelises inside torch's own thread pool, ``runtime.threads``). The tensors
of a snapshot are never written after it is published, and a snapshot is
replaced whole (one attribute store), so readers need no lock to take it.
What this costs (``plasticd bench predict``, docs/BENCHMARKS.md): request threads
share the daemon's GIL with the worker, which at 200 requests/s on 2 loaded cores
learned its backlog at about half its rate; serving from another process over a
shared-memory snapshot is the way past that.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plasticd.config import MetricsSettings
from plasticd.errors import SampleError
from plasticd.samples import Limits
from plasticd.service import answers
from plasticd.service.checkpoint_store import CheckpointInfo
from plasticd.service.pipeline import Outcome

if TYPE_CHECKING:
    from plasticd.learn.inference import Predictor
    from plasticd.learn.reports import Report
    from plasticd.service.worker import Worker

NAMESPACE = "plasticd"
NAME = "-"  # the "file" of every answer record: what plasticd predict prints for a document read from stdin
CLONE_SHARE = 20  # publish at most every CLONE_SHARE clone times: the worker spends <= 1/20 of its time cloning
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SWITCH_INTERVAL_S = 0.0005  # the interpreter's GIL switch interval while POST /predict is served (Python's default: 5 ms)
SNAPSHOT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
CODES = ("200", "400", "405", "411", "413", "415", "503")  # every status POST /predict answers, exported from the start
JSON_TYPES = ("application/json", "text/json")


@dataclass(frozen=True)
class Snapshot:
    """What the worker published: a predictor over cloned tensors and the facts of the model it was taken from."""

    predictor: Predictor
    checkpoint: int | None  # the checkpoint this model equals; None when it learned since the newest one
    samples_trained: int
    published: float  # monotonic time


class LiveModel:
    """The worker's side publishes snapshots (its hooks); the server's side answers ``POST /predict`` from them."""

    def __init__(
        self, worker: Worker, settings: MetricsSettings, registry: CollectorRegistry, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.worker = worker
        self.settings = settings  # predict, snapshot_ms
        self.model = worker.settings.model  # input_dim, num_classes
        self.limits = Limits(**worker.settings.limits.model_dump())
        self.clock = clock
        self.snapshot: Snapshot | None = None  # replaced whole by the worker, read by request threads
        self.dirty = True  # the model, or the checkpoint it equals, changed since the last snapshot (the first turn publishes)
        self.changed_at: float | None = None  # monotonic time the model first changed past the snapshot; None: it has not
        self.clone_seconds = 0.0  # the last publish's time
        self.lock = threading.Lock()  # one forward pass at a time beside the worker
        ns = NAMESPACE
        self.predictions = Counter(
            "live_predictions", "Samples predicted through POST /predict (never learned from)", namespace=ns, registry=registry
        )
        self.requests = Counter(
            "live_requests", "POST /predict requests by HTTP status", ["code"], namespace=ns, registry=registry
        )
        for code in CODES:
            self.requests.labels(code=code)
        self.request_seconds = Histogram(
            "live_request_seconds", "Time of one POST /predict in the server: reading, decoding, predicting, encoding",
            namespace=ns, buckets=REQUEST_BUCKETS, registry=registry,
        )  # fmt: skip
        self.published = Histogram(
            "live_snapshot_seconds", "Time the worker spent publishing one inference snapshot (cloning the predicting weights)",
            namespace=ns, buckets=SNAPSHOT_BUCKETS, registry=registry,
        )  # fmt: skip
        registry.register(_SnapshotLag(self))
        if settings.predict:  # a request thread waits at most this long for the GIL while the worker runs Python code
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        worker.on_batch.append(self.on_batch)
        worker.on_report.append(self.on_report)
        worker.on_turn.append(self.on_turn)
        worker.checkpoints.on_save.append(self.on_save)

    # ------------------------------------------------------------ the worker's thread

    def on_batch(self, outcome: Outcome) -> None:
        if outcome.samples:
            self._changed()

    def on_report(self, report: Report) -> None:
        if report.changed:
            self._changed()

    def _changed(self) -> None:
        self.dirty = True
        if self.changed_at is None:
            self.changed_at = self.clock()

    def on_save(self, info: CheckpointInfo | None, _seconds: float) -> None:
        if info is not None:
            self.dirty = True  # the same weights, now equal to checkpoint info.seq: say so in the answers

    def on_turn(self) -> None:
        """End of a worker turn: publish when the model changed and the throttle allows (see the module doc)."""
        if not self.dirty or not self.settings.predict:
            return
        now = self.clock()
        if self.snapshot is not None:
            since = now - self.snapshot.published
            due = since >= self.settings.snapshot_ms / 1e3 or self.worker.feed.backlog == 0
            if not due or since < CLONE_SHARE * self.clone_seconds:
                return
        self.publish()

    def publish(self) -> None:
        """Clone what predicting needs, now (the worker's thread only)."""
        started = time.perf_counter()
        engine, activity, last = self.worker.engine, self.worker.activity, self.worker.checkpoints.last
        saved = last is not None and not activity.unsaved_samples and not activity.unsaved_changes
        predictor = engine.predictor()
        self.snapshot = Snapshot(
            predictor=predictor,
            checkpoint=last.seq if saved and last is not None else None,
            samples_trained=engine.metrics.trained,
            published=self.clock(),
        )
        self.dirty, self.changed_at = False, None
        self.clone_seconds = time.perf_counter() - started
        self.published.observe(self.clone_seconds)

    # ------------------------------------------------------------ the server's threads

    def app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """WSGI for ``/predict``: POST a sample document (JSON), get the answer as ``plasticd predict`` prints it."""
        started = time.perf_counter()
        status, headers, body = self._answer(environ)
        self.requests.labels(code=status.split()[0]).inc()
        self.request_seconds.observe(time.perf_counter() - started)
        start_response(status, [("Content-Length", str(len(body))), *headers])
        return [body]

    def _answer(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _refused(
                "405 Method Not Allowed", "method_not_allowed", "POST a sample document to /predict", [("Allow", "POST")]
            )
        if not self.settings.predict:
            return _refused("503 Service Unavailable", "predict_disabled", "POST /predict is off (metrics.predict = false)")
        media = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if media and media not in JSON_TYPES and not media.endswith("+json"):
            return _refused("415 Unsupported Media Type", "unsupported_media_type", f"expected application/json, found {media}")
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return _refused("411 Length Required", "length_required", "expected a Content-Length header with the body's size")
        try:
            answers.check_size(length, self.limits)  # before reading a byte of it
        except SampleError as exc:
            return _refused("413 Payload Too Large", exc.reason, str(exc))
        data = environ["wsgi.input"].read(length) if length > 0 else b""
        snapshot = self.snapshot
        if snapshot is None:
            return _refused("503 Service Unavailable", "not_ready", "the daemon is still loading its model; retry shortly")
        m = self.model
        try:
            x, sample_id = answers.decode_document(data, ".json", m.input_dim, m.num_classes, self.limits)
        except SampleError as exc:
            return _refused("400 Bad Request", exc.reason, str(exc))
        lines = self._predict(snapshot, x, sample_id)
        headers = [
            ("Content-Type", "application/x-ndjson"),
            ("X-Plasticd-Samples-Trained", str(snapshot.samples_trained)),
            ("X-Plasticd-Lag-Ms", f"{self.lag() * 1e3:.3f}"),
        ]
        return "200 OK", headers, lines

    def lag(self) -> float:
        """Seconds the snapshot lags behind the model: since the model first changed past it (0: it is the model now)."""
        changed_at = self.changed_at
        return 0.0 if changed_at is None else max(0.0, self.clock() - changed_at)

    def _predict(self, snapshot: Snapshot, x: object, sample_id: str | None) -> bytes:
        import torch

        with self.lock, torch.inference_mode():
            logits = snapshot.predictor.logits(torch.from_numpy(x))
            out = answers.records(NAME, logits, snapshot.checkpoint, sample_id)
        self.predictions.inc(len(out))
        return "".join(answers.line(r) for r in out).encode()


class _SnapshotLag(Collector):
    """``plasticd_live_snapshot_lag_seconds``, at scrape time (absent before the first snapshot)."""

    def __init__(self, live: LiveModel) -> None:
        self.live = live

    def collect(self) -> Iterable[Metric]:
        if self.live.snapshot is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_live_snapshot_lag_seconds",
                "Seconds the snapshot POST /predict answers from lags behind the model (0: it is the model as it is now)",
                value=self.live.lag(),
            )


def _refused(
    status: str, reason: str, message: str, extra: list[tuple[str, str]] | None = None
) -> tuple[str, list[tuple[str, str]], bytes]:
    """A refusal as ``plasticd predict`` prints one: ``{"file": "-", "error": {"reason", "message"}}``."""
    body = answers.line({"file": NAME, "error": {"reason": reason, "message": message}}).encode()
    return status, [("Content-Type", "application/json"), *(extra or [])], body
