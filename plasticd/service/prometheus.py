"""Prometheus metrics over HTTP: ``/metrics`` for a scraper, ``/healthz`` for a liveness probe.

Off by default (``metrics.enabled``); when on, a small HTTP server listens on
``metrics.host:metrics.port`` (127.0.0.1 by default: this host only) in a daemon
thread for as long as the worker loop runs.

The worker's thread owns the engine, so nothing here touches the model. What
the metrics show comes from two places, both safe to read from the server's
threads:

* at scrape time, ``DaemonCollector`` reads the status the heartbeat publishes
  every ``daemon.status_seconds`` (a dict replaced whole, never changed in
  place), and the loop's last tick: counts, accuracy, queue, network size;
* as things happen, hooks the worker calls in its own thread observe
  prometheus_client's own (thread-safe) counters and histograms: each
  micro-batch (``Worker.on_batch``: its time, its quarantined files by reason),
  each maintenance report (``Worker.on_report``: rewiring time, drift alarms,
  growth checks, merges), each checkpoint attempt (``Checkpointing.on_save``).

``/healthz`` answers 200 while the loop turns and 503 once it has not turned
for ``metrics.stall_seconds`` (``LoopHealth``): a stuck step, a hung disk or a
dead worker thread, which a process-level check (the PID is alive) misses.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

import plasticd
from plasticd.config import MetricsSettings
from plasticd.errors import PlasticdError
from plasticd.learn.reports import DriftReport, GrowthReport, MergeReport, Report, RewireReport
from plasticd.log import get_logger
from plasticd.samples.reasons import SAMPLE_REASONS
from plasticd.service.checkpoint_store import CheckpointInfo
from plasticd.service.live import LiveModel
from plasticd.service.pipeline import Outcome
from plasticd.service.status import State
from plasticd.service.worker import Worker

NAMESPACE = "plasticd"
POLL_S = 0.2  # the server checks for a stop request this often (bounds how long stop() waits)
# A micro-batch is milliseconds on a small network, seconds on a large one under backlog.
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REWIRE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CHECKPOINT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A file's arrival to its prediction: milliseconds when the daemon keeps up, minutes behind a backlog.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
QUARANTINE_REASONS = (*SAMPLE_REASONS, "non_finite_training")  # every reason a file is quarantined for (pipeline.py)
# Every (kind, result) a maintenance report counts as (observe_report), exported as zero series from the start.
MAINTENANCE = (
    *(("rewire", r) for r in ("applied", "skipped")),
    *(("growth", r) for r in ("grew", "retired", "grew+retired", "none", "skipped")),
    *(("merge", r) for r in ("applied", "refused", "skipped")),
    *(("drift", r) for r in ("detected", "group")),
)


@dataclass
class LoopHealth:
    """The ``/healthz`` rule: healthy while the worker loop turned within the last ``stall_seconds``.

    ``last_tick`` gives the monotonic time of the loop's latest turn (the
    heartbeat's, which starts counting when the worker is built, so recovery
    at start-up has the same allowance); ``clock`` is injectable for tests.
    """

    last_tick: Callable[[], float]
    stall_seconds: float
    clock: Callable[[], float] = time.monotonic

    def age(self) -> float:
        """Seconds since the loop last turned."""
        return max(0.0, self.clock() - self.last_tick())

    def healthy(self) -> bool:
        return self.age() <= self.stall_seconds


class DaemonCollector(Collector):
    """The worker's current state as metrics, read at scrape time from what its heartbeat published."""

    def __init__(self, worker: Worker, health: LoopHealth) -> None:
        self.worker = worker
        self.health = health

    def collect(self) -> Iterator[Metric]:
        status: dict[str, Any] = self.worker.heartbeat.published  # one read: the heartbeat replaces it whole
        age = self.health.age()
        yield GaugeMetricFamily(f"{NAMESPACE}_loop_tick_age_seconds", "Seconds since the worker loop last turned", value=age)
        yield GaugeMetricFamily(
            f"{NAMESPACE}_healthy",
            "1 while the worker loop turns (as /healthz: 200), 0 once it stalled",
            value=float(age <= self.health.stall_seconds),
        )
        yield InfoMetricFamily(
            NAMESPACE, "The running plasticd", value={"version": plasticd.__version__, "mode": self.worker.mode}
        )
        if not status:  # nothing published yet: the worker is still recovering
            return
        state = status.get("state")
        yield StateSetMetricFamily(f"{NAMESPACE}_state", "The worker's state", value={s.value: s.value == state for s in State})
        for key, doc in (
            ("samples_seen", "Samples predicted, over the model's life (continued from the checkpoint)"),
            ("samples_labelled", "Samples that carried a label, over the model's life"),
            ("samples_trained", "Labelled samples the network learned from, over the model's life"),
            ("files_processed", "Files predicted and learned, over the model's life"),
            ("files_failed", "Files quarantined, over the model's life (by reason: plasticd_files_quarantined_total)"),
        ):
            yield CounterMetricFamily(f"{NAMESPACE}_{key}", doc, value=status.get(key, 0))
        for key, doc in (
            ("accuracy", "Prequential accuracy over every labelled sample (each predicted before it was learned)"),
            ("window_accuracy", "Prequential accuracy over the last train.window labelled samples"),
            ("loss", "Mean prequential cross-entropy over the last train.window labelled samples"),
            ("queue_depth", "Items waiting to be processed"),
            ("pending_files", "Files learned but not yet moved on (waiting for a checkpoint or a move)"),
            ("neurons", "Recurrent neurons N"),
            ("active_connections", "Active recurrent connections"),
        ):
            if status.get(key) is not None:  # accuracy and loss are unknown before the first label: absent, not 0
                yield GaugeMetricFamily(f"{NAMESPACE}_{key}", doc, value=status[key])
        yield from _replica_metrics(status.get("replicas") or [])
        last = status.get("last_checkpoint")
        if last is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_checkpoint_last_seq", "Sequence number of the newest checkpoint", value=last["seq"]
            )


def _replica_metrics(replicas: list[dict]) -> Iterator[Metric]:
    """Each replica's own counts since the group started, labelled by rank (a group's status; the totals above)."""
    if not replicas:
        return
    for key, doc, family in (
        ("files_processed", "Files this replica predicted and learned since the group started", CounterMetricFamily),
        ("files_failed", "Files this replica quarantined since the group started", CounterMetricFamily),
        ("samples", "Samples this replica predicted since the group started", CounterMetricFamily),
        ("queue_depth", "Items waiting in this replica's feed", GaugeMetricFamily),
        ("pending_files", "Files this replica learned and has not moved on yet", GaugeMetricFamily),
    ):
        metric = family(f"{NAMESPACE}_replica_{key}", doc, labels=["rank"])
        for entry in replicas:
            metric.add_metric([str(entry["rank"])], float(entry.get(key, 0)))
        yield metric


class Exporter:
    """The metrics of one worker and the HTTP server that serves them (``start``/``stop``).

    ``attach`` (done by the constructor) adds its hooks to the worker; each hook
    only updates prometheus_client's own thread-safe metrics, in the worker's thread.
    """

    def __init__(self, worker: Worker, settings: MetricsSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.worker = worker
        self.settings = settings
        self.log = get_logger("metrics")
        self.health = LoopHealth(lambda: worker.heartbeat.last_tick, settings.stall_seconds, clock)
        self.registry = CollectorRegistry()  # not the global default: one exporter, one registry (tests build several)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds (Linux /proc)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(DaemonCollector(worker, self.health))
        r, ns = self.registry, NAMESPACE
        self.step_seconds = Histogram(
            "step_seconds", "Time of one micro-batch in the pipeline: decoding, the engine's predict-then-train steps, journal",
            namespace=ns, buckets=STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self.quarantined = Counter(
            "files_quarantined",
            "Files quarantined since this process started, by reason code",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        for reason in QUARANTINE_REASONS:  # zero series from the start: a rate() sees the first refusal
            self.quarantined.labels(reason=reason)
        self.latency_seconds = Histogram(
            "file_latency_seconds", "A file's end-to-end latency: from its arrival (as latency_ms counts it) to the end of"
            " the micro-batch that predicted and learned it", namespace=ns, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rewire_seconds = Histogram(
            "rewire_seconds", "Time of one structural plasticity cycle (statistics pass and rewiring)",
            namespace=ns, buckets=REWIRE_BUCKETS, registry=r,
        )  # fmt: skip
        self.maintenance = Counter(
            "maintenance", "Maintenance reports since this process started, by kind (rewire, growth, merge, drift) and result",
            ["kind", "result"], namespace=ns, registry=r,
        )  # fmt: skip
        for kind, result in MAINTENANCE:
            self.maintenance.labels(kind=kind, result=result)
        self.drift_events = Counter(
            "drift_events", "Drift alarms (drift.detected) since this process started", namespace=ns, registry=r
        )
        self.checkpoint_seconds = Histogram(
            "checkpoint_seconds", "Time of one successful checkpoint (journal fsync, tensors, commit record)",
            namespace=ns, buckets=CHECKPOINT_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoint_bytes = Gauge(
            "checkpoint_size_bytes", "Size of the newest checkpoint's tensors file", namespace=ns, registry=r
        )
        self.resumed = _newest(worker)  # until recovery loaded one: the newest checkpoint on disk
        self.checkpoint_bytes.set_function(lambda: float(c.tensors_bytes) if (c := self.newest()) else 0.0)
        self.checkpoint_failures = Counter(
            "checkpoint_failures", "Failed checkpoint attempts since this process started", namespace=ns, registry=r
        )
        self.checkpoint_failing = Gauge(
            "checkpoint_consecutive_failures", "Checkpoint attempts failed in a row (checkpoint.max_failures stops the daemon)",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.checkpoint_time = Gauge(
            "checkpoint_last_success_timestamp_seconds", "Unix time the newest checkpoint was written (by this process,"
            " or the one it resumed from): 0 only when there is none", namespace=ns, registry=r,
        )  # fmt: skip
        self.checkpoint_time.set_function(lambda: _timestamp(c.created) if (c := self.newest()) else 0.0)
        self.waiting_age = Gauge(
            "oldest_waiting_file_age_seconds", "Seconds the oldest file waiting to be taken has waited since this process"
            " first saw it (0: none waits)", namespace=ns, registry=r,
        )  # fmt: skip
        self.waiting_age.set_function(self.oldest_waiting_age)
        self.live = LiveModel(worker, settings, r)  # POST /predict, and its metrics in this registry
        self.metrics_app = make_wsgi_app(self.registry)
        self.server: WSGIServer | None = None
        self.thread: threading.Thread | None = None
        self.attach()

    # ------------------------------------------------------------ observation (the worker's thread)

    def attach(self) -> None:
        self.worker.on_batch.append(self.observe_batch)
        self.worker.on_report.append(self.observe_report)
        self.worker.checkpoints.on_save.append(self.observe_checkpoint)

    def newest(self) -> CheckpointInfo | None:
        """The newest checkpoint of this model: the last one saved or loaded, else the newest on disk at start."""
        return self.worker.checkpoints.last or self.resumed

    def oldest_waiting_age(self) -> float:
        since = self.worker.feed.waiting_since()
        return 0.0 if since is None else max(0.0, time.time() - since)

    def observe_batch(self, outcome: Outcome) -> None:
        self.step_seconds.observe(self.worker.batch_seconds)
        now = time.time()
        for item in outcome.done:
            self.latency_seconds.observe(max(0.0, now - item.arrived))
        for reason in outcome.reasons:
            self.quarantined.labels(reason=reason).inc()

    def observe_report(self, report: Report) -> None:
        if isinstance(report, RewireReport):
            result = "skipped" if report.skipped else "applied"
            if not report.skipped:
                self.rewire_seconds.observe((report.estimate_ms + report.rewire_ms) / 1e3)
            self.maintenance.labels(kind="rewire", result=result).inc()
        elif isinstance(report, GrowthReport):
            self.maintenance.labels(kind="growth", result=report.decision).inc()
        elif isinstance(report, MergeReport):
            result = "applied" if report.skipped is None else "refused" if report.refused else "skipped"
            self.maintenance.labels(kind="merge", result=result).inc()
        elif isinstance(report, DriftReport):
            self.drift_events.inc()
            self.maintenance.labels(kind="drift", result="detected" if report.origin == "local" else "group").inc()

    def observe_checkpoint(self, info: CheckpointInfo | None, seconds: float) -> None:
        self.checkpoint_failing.set(self.worker.checkpoints.failures)
        if info is None:
            self.checkpoint_failures.inc()
            return
        self.checkpoint_seconds.observe(seconds)  # size and time follow checkpoints.last (set_function)

    # ------------------------------------------------------------ HTTP (the server's threads)

    def app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """WSGI: ``/metrics`` is prometheus_client's own app over this registry; ``/healthz`` the loop's health."""
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self.metrics_app(environ, start_response)
        if path == "/predict":
            return self.live.app(environ, start_response)
        if path == "/healthz":
            healthy = self.health.healthy()
            body = {
                "status": "ok" if healthy else "stalled",
                "state": self.worker.heartbeat.state.value,
                "loop_tick_age_seconds": round(self.health.age(), 3),
                "stall_seconds": self.health.stall_seconds,
            }
            start_response("200 OK" if healthy else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [json.dumps(body).encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"plasticd serves /metrics, /healthz and POST /predict\n"]

    def start(self) -> None:
        """Listen on ``metrics.host:metrics.port`` and serve in a daemon thread; PlasticdError when it cannot listen."""
        host, port = self.settings.host, self.settings.port
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            server_class = type("MetricsServer", (_ThreadingServer,), {"address_family": family})
            self.server = make_server(host, port, self.app, server_class, handler_class=_QuietHandler)
        except OSError as exc:
            hint = "choose another metrics.host/metrics.port or set metrics.enabled = false"
            if exc.errno == errno.EAFNOSUPPORT:  # a sandbox without IP sockets
                hint = "under systemd, RestrictAddressFamilies= must allow AF_INET (AF_INET6 for an IPv6 address)"
            raise PlasticdError(f"metrics: cannot listen on {host}:{port} ({exc}); {hint}") from exc
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": POLL_S}, name="metrics", daemon=True
        )
        self.thread.start()
        self.log.info("metrics.listening", host=host, port=self.port, url=f"http://{_url_host(host)}:{self.port}/metrics")

    @property
    def port(self) -> int:
        """The port listened on (the one chosen by the system when ``metrics.port`` is 0)."""
        assert self.server is not None, "not started"
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); requests in flight finish in their own threads."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5.0)
        self.server, self.thread = None, None
        self.log.info("metrics.stopped")


def start_exporter(worker: Worker, settings: MetricsSettings) -> Exporter | None:
    """The exporter of ``worker``, serving, when ``metrics.enabled``; None otherwise."""
    if not settings.enabled:
        return None
    exporter = Exporter(worker, settings)
    exporter.start()
    return exporter


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, none waited for at close (a slow scraper never holds up the daemon's stop)."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scrape every 15 s would fill the journal."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


def _newest(worker: Worker) -> CheckpointInfo | None:
    """The newest committed checkpoint listed in the worker's store, None when there is none or it cannot be listed."""
    try:
        infos = worker.store.list()
    except OSError:
        return None
    return infos[-1] if infos else None


def _timestamp(created: str) -> float:
    """Unix time of a checkpoint's ``created`` (ISO 8601, UTC)."""
    return datetime.fromisoformat(created).timestamp()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
