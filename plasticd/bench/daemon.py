"""``plasticd bench daemon``: the real daemon, end to end, against the I/O floor.

In a fresh temporary folder, for each file format (.json, .npz):

1. **I/O floor** — a bare loop that only reads, parses (with the daemon's own
   parsers: orjson, numpy) and renames the same files, measured first on an
   identical copy of the inbox.
2. **Backlog** — the inbox is pre-filled with N real Fashion-MNIST samples,
   one per file; the real ``plasticd run`` process starts and we time from
   READY until every file has its prediction (files/s), and until every file
   reached ``data_processed/``.
3. **Steady arrival** (JSON only) — a producer writes files at a fixed rate
   (write, then rename into the inbox); per-file latency is the time from the
   rename to the prediction line, as the daemon records it (p50/p99).

The daemon's peak RSS (VmHWM) is read from /proc before it is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plasticd.bench.common import SubParsers, positive_int, write_results
from plasticd.config import Settings

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class DaemonBenchOptions:
    files: int = 10000  # backlog size per format
    rate: float = 100.0  # files/s in the steady-arrival phase
    seconds: float = 10.0  # length of the steady-arrival phase
    formats: tuple[str, ...] = ("json", "npz")
    json_out: Path | None = None


def _write_samples(folder: Path, x: np.ndarray, y: np.ndarray, fmt: str) -> list[Path]:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(y)):
        path = folder / f"s{i:06d}.{fmt}"
        if fmt == "json":
            path.write_text(json.dumps({"x": np.round(x[i], 4).tolist(), "y": int(y[i])}))
        else:
            np.savez(path, x=x[i], y=np.int64(y[i]))
        paths.append(path)
    return paths


def io_floor(folder: Path, fmt: str, stdlib_json: bool = False) -> float:
    """Files/s of read + parse + rename alone over every file in ``folder`` (JSON with orjson, as the
    daemon parses it, or with the standard library's json when ``stdlib_json``)."""
    import numpy as np
    import orjson

    done = folder.parent / f"{folder.name}-floor-done"
    done.mkdir(exist_ok=True)
    names = sorted(os.listdir(folder))
    start = time.perf_counter()
    for name in names:
        src = folder / name
        if fmt == "json":
            doc = (json.loads if stdlib_json else orjson.loads)(src.read_bytes())
            np.asarray(doc["x"], dtype=np.float32)
        else:
            with np.load(src, allow_pickle=False) as z:
                z["x"], z["y"]
        os.rename(src, done / name)
    return len(names) / (time.perf_counter() - start)


class _Daemon:
    def __init__(self, root: Path, config: Path) -> None:
        self.log_path = root / "daemon.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plasticd", "run", "--config", str(config)],
            cwd=root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.predictions = root / "state" / "predictions.jsonl"

    def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b'"daemon.ready"' in self.log_path.read_bytes():
                return time.perf_counter()
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited early:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.01)
        raise TimeoutError("daemon did not become ready")

    def count_predictions(self) -> int:
        try:
            with open(self.predictions, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self._log.close()


def _wait(predicate, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(0.005)
    raise TimeoutError(f"timed out waiting for {what}")


def _config(root: Path, settings: Settings) -> Path:
    path = root / "plasticd.toml"
    path.write_text(
        "[runtime]\n"
        f"threads = {settings.runtime.threads}\n"
        f'device = "{settings.runtime.device}"\n'
        '[log]\nformat = "json"\nlevel = "info"\n'  # as operators run it: one event per sample
    )
    return path


def _backlog(root: Path, x: np.ndarray, y: np.ndarray, fmt: str, settings: Settings) -> dict:
    staging = root / f"staging-{fmt}"
    _write_samples(staging, x, y, fmt)
    floor_copy = root / f"floor-{fmt}"
    shutil.copytree(staging, floor_copy)
    floor = io_floor(floor_copy, fmt)
    floor_stdlib = None
    if fmt == "json":
        shutil.rmtree(floor_copy.parent / f"{floor_copy.name}-floor-done")
        shutil.copytree(staging, floor_copy, dirs_exist_ok=True)
        floor_stdlib = io_floor(floor_copy, fmt, stdlib_json=True)
    inbox = root / "data_inbox"
    inbox.mkdir(exist_ok=True)
    for name in os.listdir(staging):
        os.rename(staging / name, inbox / name)
    daemon = _Daemon(root, _config(root, settings))
    try:
        t0 = daemon.wait_ready()
        n = len(y)
        t_pred = _wait(lambda: daemon.count_predictions() >= n, 600, "all predictions")
        processed = root / "data_processed"
        t_moved = _wait(lambda: processed.exists() and len(os.listdir(processed)) >= n, 600, "all files processed")
        rss = daemon.peak_rss_mb()
    finally:
        daemon.stop()
    shutil.rmtree(root / "data_processed")
    (root / "state" / "predictions.jsonl").unlink()
    return {
        "format": fmt,
        "files": n,
        "floor_files_per_s": floor,
        "floor_stdlib_json_files_per_s": floor_stdlib,
        "daemon_files_per_s": n / (t_pred - t0),
        "to_processed_files_per_s": n / (t_moved - t0),
        "peak_rss_mb": rss,
    }


def learning_ceiling(settings: Settings, x: np.ndarray, y: np.ndarray) -> float:
    """Samples/s of the Engine alone on the same samples in micro-batches of ``train.max_batch`` (the daemon's under
    backlog), in this process: no file is read or moved, so the daemon can reach at most this rate."""
    import torch

    from plasticd.learn.engine import Engine

    engine = Engine.from_settings(settings)
    xt, b = torch.from_numpy(x), settings.train.max_batch
    engine.step(xt[:b], y[:b])  # the first step allocates the workspace
    start = time.perf_counter()
    for i in range(b, len(y), b):
        engine.step(xt[i : i + b], y[i : i + b])
    return (len(y) - b) / (time.perf_counter() - start)


def _steady(root: Path, x: np.ndarray, y: np.ndarray, opts: DaemonBenchOptions, settings: Settings) -> dict:
    import numpy as np

    daemon = _Daemon(root, _config(root, settings))
    inbox = root / "data_inbox"
    try:
        daemon.wait_ready()
        time.sleep(1.0)
        n = int(opts.rate * opts.seconds)
        period = 1.0 / opts.rate
        start = time.perf_counter()
        for i in range(n):
            target = start + i * period
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            tmp = inbox / f".r{i:06d}.json.tmp"
            tmp.write_text(json.dumps({"x": np.round(x[i % len(y)], 4).tolist(), "y": int(y[i % len(y)])}))
            os.rename(tmp, inbox / f"r{i:06d}.json")
        achieved = n / (time.perf_counter() - start)
        _wait(lambda: daemon.count_predictions() >= n, 120, "steady-state predictions")
        rss = daemon.peak_rss_mb()
    finally:
        daemon.stop()
    lat = np.array([json.loads(line)["latency_ms"] for line in daemon.predictions.read_text().splitlines()])
    return {
        "files": n,
        "rate_files_per_s": achieved,
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "latency_max_ms": float(lat.max()),
        "peak_rss_mb": rss,
    }


def run_daemon_bench(settings: Settings, opts: DaemonBenchOptions) -> dict:
    from plasticd.data.fashion_mnist import load_split

    train = load_split(settings.paths.dataset, "train")
    x, y = train.x[: opts.files], train.y[: opts.files]
    results: dict = {"backlog": [], "steady": None, "learning_ceiling_samples_per_s": learning_ceiling(settings, x, y)}
    print(
        f"plasticd bench daemon: {opts.files} files per format, steady phase {opts.rate:g} files/s for {opts.seconds:g} s",
        flush=True,
    )
    for fmt in opts.formats:
        with tempfile.TemporaryDirectory(prefix="plasticd-bench-") as tmp:
            r = _backlog(Path(tmp), x, y, fmt, settings)
        results["backlog"].append(r)
        floors = (
            f"I/O floor {r['floor_files_per_s']:.0f} files/s (daemon = {r['daemon_files_per_s'] / r['floor_files_per_s']:.0%})"
        )
        if r["floor_stdlib_json_files_per_s"]:
            std = r["floor_stdlib_json_files_per_s"]
            floors += f", with stdlib json {std:.0f} files/s (daemon = {r['daemon_files_per_s'] / std:.0%})"
        ceiling = results["learning_ceiling_samples_per_s"]
        floors += f"; the Engine alone learns {ceiling:.0f} samples/s (daemon = {r['daemon_files_per_s'] / ceiling:.0%})"
        print(
            f"  backlog .{fmt}: daemon {r['daemon_files_per_s']:.0f} files/s to prediction, "
            f"{r['to_processed_files_per_s']:.0f} files/s to data_processed/; {floors}; peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="plasticd-bench-") as tmp:
        s = _steady(Path(tmp), x, y, opts, settings)
    results["steady"] = s
    print(
        f"  steady .json at {s['rate_files_per_s']:.0f} files/s: latency p50 {s['latency_p50_ms']:.1f} ms, "
        f"p99 {s['latency_p99_ms']:.1f} ms, max {s['latency_max_ms']:.1f} ms; peak RSS {s['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    print("targets:")
    for r in results["backlog"]:
        share = r["daemon_files_per_s"] / r["floor_files_per_s"]
        label = f"share of the I/O floor (.{r['format']})"
        print(f"  {label:<42} {share:7.0%}  (target >= 50%)    {_verdict(share >= 0.5)}")
    p50, p99, rate = s["latency_p50_ms"], s["latency_p99_ms"], s["rate_files_per_s"]
    print(f"  latency p50 at {rate:.0f} files/s               {p50:7.1f}ms (target <= 3 ms)  {_verdict(p50 <= 3)}")
    print(f"  latency p99 at {rate:.0f} files/s               {p99:7.1f}ms (target <= 10 ms) {_verdict(p99 <= 10)}")
    rss = max([r["peak_rss_mb"] for r in results["backlog"]] + [s["peak_rss_mb"]])
    n = settings.model.neurons
    print(f"  daemon peak RSS, N={n}                   {rss:7.0f}MB (target <= 400 MB) {_verdict(rss <= 400)}")
    if opts.json_out is not None:
        write_results(opts.json_out, results)
    return results


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# ---------------------------------------------------------------- command line


def register(subparsers: SubParsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "daemon",
        help="the real daemon end to end: files/s under backlog, latency at a steady rate, peak RSS",
        description="Run the real daemon (plasticd run, a subprocess) on a pre-filled inbox, per file format: "
        "files/s against the read+parse+rename floor; then at a steady arrival rate: latency p50/p99; "
        "and report its peak RSS. Everything happens in a fresh temporary folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--files", type=positive_int, default=10000, help="backlog files per format (default 10000)")
    p.add_argument("--rate", type=float, default=100.0, help="steady arrival rate in files/s (default 100)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the steady phase (default 10)")
    p.add_argument("--formats", nargs="+", choices=["json", "npz"], default=["json", "npz"], help="backlog file formats")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=run)
    return p


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``plasticd bench daemon`` with its parsed options."""
    opts = DaemonBenchOptions(
        files=args.files, rate=args.rate, seconds=args.seconds, formats=tuple(args.formats), json_out=args.json
    )
    run_daemon_bench(settings, opts)
    return 0
