"""``plasticd bench predict``: POST /predict on the live daemon while it learns a backlog.

In a fresh temporary folder the real ``plasticd run`` (a subprocess, metrics on,
loopback) learns a pre-filled inbox of N real Fashion-MNIST samples, one per file,
in three arms run in turn (``--repeats`` rounds, so the arms share the host's load):

* ``off``: ``metrics.predict = false`` (no snapshots published): the daemon as it was;
* ``idle``: POST /predict on, no requests: the cost of publishing snapshots;
* ``floor``: as ``idle``, while the same client sends the same requests to a bare
  server of the same HTTP stack in another process (a fixed answer): the latency
  floor of this host while the daemon learns, and the client's own CPU cost;
* ``load``: a client in this process sends POST /predict (one test-set sample each)
  at ``--rate`` requests/s, open loop (each at its scheduled time, from a few threads),
  for as long as the backlog lasts.

``load / idle`` is the target's ratio (the learning rate with requests against
without); on a host with few cores the client's own CPU weighs in it, which
``load / floor`` leaves out (the same client in both).

Throughput is files/s from READY to the last prediction line. Latency is each
request's send-to-answer time (p50/p99/max), and also from its scheduled time
(which adds this process's own lateness). From ``/metrics`` come the micro-batch
times: a request answered *through the worker's queue* would wait for the batch
in progress, which is why answers come from a snapshot (``service/live.py``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticd.bench.common import SubParsers, positive_int, write_results
from plasticd.config import Settings

ARMS = ("off", "idle", "floor", "load")
# The HTTP floor: the same server stack (wsgiref, a thread per request) answering a fixed line, in its own process.
FLOOR_SERVER = """
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
ANSWER = b'{"file":"-","index":0,"predicted":3,"confidence":.5,"probabilities":[0.1,0.1,0.1,0.5,0.2,0,0,0,0,0],"checkpoint":1}\\n'
def app(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/x-ndjson"), ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]
make_server("127.0.0.1", int(sys.argv[1]), app, Server, handler_class=Quiet).serve_forever()
"""
CLIENT_THREADS = 4
TARGET_P99_MS, TARGET_RATIO = 5.0, 0.9


@dataclass(frozen=True)
class PredictBenchOptions:
    files: int = 10000
    rate: float = 200.0
    repeats: int = 2
    json_out: Path | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(root: Path, settings: Settings, port: int, predict: bool) -> Path:
    path = root / "plasticd.toml"
    path.write_text(
        f'[runtime]\nthreads = {settings.runtime.threads}\ndevice = "{settings.runtime.device}"\n'
        '[log]\nformat = "json"\nlevel = "info"\n'  # as operators run it: one event per sample
        f"[metrics]\nenabled = true\nport = {port}\npredict = {'true' if predict else 'false'}\n"
    )
    return path


def _post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {
        s.name + ("" if not s.labels else json.dumps(s.labels, sort_keys=True)): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class _Client:
    """Open-loop POST /predict at ``rate``/s from a few threads until stopped; every answer checked to be a 200."""

    def __init__(self, port: int, bodies: list[bytes], rate: float) -> None:
        self.port, self.bodies, self.period = port, bodies, 1.0 / rate
        self.stop = threading.Event()
        self.service: list[float] = []  # send -> answer, seconds
        self.scheduled: list[float] = []  # scheduled time -> answer
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(CLIENT_THREADS)]

    def start(self) -> None:
        self.t0 = time.perf_counter() + 0.05
        for t in self.threads:
            t.start()

    def _run(self, k: int) -> None:
        i = k
        while not self.stop.is_set():
            due = self.t0 + i * self.period
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            status, answer = _post(self.port, self.bodies[i % len(self.bodies)])
            done = time.perf_counter()
            if status != 200:
                self.errors.append(f"{status} {answer[:200]!r}")
            self.service.append(done - sent)
            self.scheduled.append(done - due)
            i += CLIENT_THREADS

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def _arm(root: Path, staging: Path, arm: str, bodies: list[bytes], opts: PredictBenchOptions, settings: Settings) -> dict:
    import numpy as np

    inbox = root / "data_inbox"
    inbox.mkdir(exist_ok=True)
    names = sorted(os.listdir(staging))
    for name in names:  # the same files every arm; copies (the daemon refuses hard links), renamed in as producers do
        shutil.copyfile(staging / name, inbox / f".{name}.tmp")
        os.rename(inbox / f".{name}.tmp", inbox / name)
    port = _free_port()
    log_path = root / f"daemon-{arm}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plasticd", "run", "--config", str(_config(root, settings, port, arm != "off"))],
            cwd=root, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        journal = root / "state" / "predictions.jsonl"
        floor = None
        if arm == "floor":
            floor_port = _free_port()
            floor = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(floor_port)])
            _until(lambda: _listening(floor_port), 60, "the floor server", floor, log_path)
        client = _Client(port if arm == "load" else floor_port, bodies, opts.rate) if arm in ("load", "floor") else None
        try:
            _until(lambda: b'"daemon.ready"' in log_path.read_bytes(), 180, "daemon.ready", proc, log_path)
            t0 = time.perf_counter()
            if client is not None:
                client.start()
            _until(lambda: _lines(journal) >= len(names), 900, "every prediction", proc, log_path, root / "data_failed")
            t1 = time.perf_counter()
            if client is not None:
                client.finish()
            metrics = _scrape(port)
        finally:
            if client is not None:
                client.finish()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
            if floor is not None:
                floor.terminate()
                floor.wait(timeout=30)
    for folder in ("data_processed", "state", "checkpoints", "data_work"):
        shutil.rmtree(root / folder, ignore_errors=True)
    result: dict[str, Any] = {
        "arm": arm,
        "files_per_s": len(names) / (t1 - t0),
        "step_ms_mean": 1e3 * metrics["plasticd_step_seconds_sum"] / max(metrics["plasticd_step_seconds_count"], 1),
        "step_over_5ms_share": 1.0 - _bucket(metrics, "plasticd_step_seconds", "0.005"),
    }
    if arm != "off":
        count = metrics.get("plasticd_live_snapshot_seconds_count", 0.0)
        result["snapshots"] = count
        result["snapshot_ms_mean"] = 1e3 * metrics.get("plasticd_live_snapshot_seconds_sum", 0.0) / max(count, 1)
    if client is not None:
        service, scheduled = np.array(client.service) * 1e3, np.array(client.scheduled) * 1e3
        result.update(
            requests=len(service),
            requests_per_s=len(service) / (t1 - t0),
            errors=len(client.errors),
            first_error=client.errors[0] if client.errors else None,
            p50_ms=float(np.percentile(service, 50)),
            p99_ms=float(np.percentile(service, 99)),
            max_ms=float(service.max()),
            scheduled_p99_ms=float(np.percentile(scheduled, 99)),
        )
    return result


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _bucket(metrics: dict[str, float], name: str, le: str) -> float:
    """Share of a histogram's observations at or below ``le``."""
    count = metrics.get(f"{name}_count", 0.0)
    return metrics.get(f'{name}_bucket{{"le": "{le}"}}', 0.0) / count if count else 1.0


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _until(check: Any, timeout: float, what: str, proc: subprocess.Popen, log_path: Path, failed: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if failed is not None and failed.is_dir() and any(failed.iterdir()):
            raise RuntimeError(f"the daemon quarantined a benchmark file (see {failed}):\n{log_path.read_text()[-2000:]}")
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited early:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.005)
    raise TimeoutError(f"timed out waiting for {what}")


def run_predict_bench(settings: Settings, opts: PredictBenchOptions) -> dict:
    import numpy as np

    from plasticd.data.fashion_mnist import load_split

    train, test = load_split(settings.paths.dataset, "train"), load_split(settings.paths.dataset, "test")
    bodies = [json.dumps({"x": np.round(test.x[i], 4).tolist()}).encode() for i in range(500)]
    print(
        f"plasticd bench predict: {opts.files} files of backlog per arm, POST /predict at {opts.rate:g}/s "
        f"(arm load), {opts.repeats} rounds of {', '.join(ARMS)}",
        flush=True,
    )
    rounds: list[list[dict]] = []
    with tempfile.TemporaryDirectory(prefix="plasticd-bench-") as tmp:
        root = Path(tmp)
        staging = root / "staging"
        staging.mkdir()
        for i in range(opts.files):
            (staging / f"s{i:06d}.json").write_text(json.dumps({"x": np.round(train.x[i], 4).tolist(), "y": int(train.y[i])}))
        for r in range(opts.repeats):
            arms = [_arm(root, staging, arm, bodies, opts, settings) for arm in ARMS]
            rounds.append(arms)
            by = {a["arm"]: a for a in arms}
            load, floor = by["load"], by["floor"]
            rates = ", ".join(f"{a} {by[a]['files_per_s']:.0f}" for a in ARMS)
            print(
                f"  round {r + 1}: backlog files/s {rates} (load/idle {load['files_per_s'] / by['idle']['files_per_s']:.1%}, "
                f"load/floor {load['files_per_s'] / floor['files_per_s']:.1%}); {load['requests']} requests at "
                f"{load['requests_per_s']:.0f}/s, {load['errors']} errors: p50 {load['p50_ms']:.2f} ms, p99 "
                f"{load['p99_ms']:.2f} ms, max {load['max_ms']:.1f} ms (floor: p50 {floor['p50_ms']:.2f}, p99 "
                f"{floor['p99_ms']:.2f} ms); micro-batch mean {load['step_ms_mean']:.2f} ms, {load['step_over_5ms_share']:.0%} "
                f"over 5 ms; {load['snapshots']:.0f} snapshots, {load['snapshot_ms_mean']:.2f} ms each",
                flush=True,
            )
    p99 = [a["p99_ms"] for arms in rounds for a in arms if a["arm"] == "load"]
    by_arm = [{a["arm"]: a for a in arms} for arms in rounds]
    ratio = [b["load"]["files_per_s"] / b["idle"]["files_per_s"] for b in by_arm]
    beside = [b["load"]["files_per_s"] / b["floor"]["files_per_s"] for b in by_arm]
    floor_p99 = [b["floor"]["p99_ms"] for b in by_arm]
    print("targets:")
    met = _verdict(max(p99) <= TARGET_P99_MS)
    print(f"  p99 at {opts.rate:g} requests/s        {_spread(p99, '{:.2f}')} ms (<= {TARGET_P99_MS:g} ms)  {met}")
    met = _verdict(min(ratio) >= TARGET_RATIO)
    print(f"  backlog files/s, load / idle  {_spread(ratio, '{:.1%}')} (>= {TARGET_RATIO:.0%})  {met}")
    print(f"  HTTP floor p99, same load     {_spread(floor_p99, '{:.2f}')} ms (this host, for comparison)")
    print(f"  backlog files/s, load / floor {_spread(beside, '{:.1%}')} (the same client in both, for comparison)")
    results = {"options": {"files": opts.files, "rate": opts.rate, "repeats": opts.repeats}, "rounds": rounds}
    if opts.json_out is not None:
        write_results(opts.json_out, results)
    return results


def _spread(values: list[float], fmt: str) -> str:
    shown = ", ".join(fmt.format(v) for v in values)
    return f"{shown} (min {fmt.format(min(values))}, max {fmt.format(max(values))})"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# ---------------------------------------------------------------- command line


def register(subparsers: SubParsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="POST /predict on the live daemon while it learns a backlog: latency, and the backlog's files/s with and without",
        description="Run the real daemon (plasticd run, a subprocess, metrics on loopback) on a pre-filled inbox of "
        "Fashion-MNIST files, three arms per round: predict off, predict on without requests, and with a client sending "
        "POST /predict at --rate requests/s for as long as the backlog lasts. Prints files/s of each arm and their "
        "ratios, the requests' latency p50/p99/max, the micro-batch times and the snapshots published. Targets: p99 <= "
        "5 ms at 200 requests/s, files/s with requests >= 90% of without.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--files", type=positive_int, default=10000, help="backlog files per arm (default 10000)")
    p.add_argument("--rate", type=float, default=200.0, help="POST /predict requests per second (default 200)")
    p.add_argument("--repeats", type=positive_int, default=2, help="rounds of the three arms (default 2)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=run)
    return p


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``plasticd bench predict`` with its parsed options."""
    run_predict_bench(settings, PredictBenchOptions(files=args.files, rate=args.rate, repeats=args.repeats, json_out=args.json))
    return 0
