"""``plasticd bench scale``: 1 against 2 (or more) replicas on the same Fashion-MNIST files, through the real inbox.

Each run is a real group (``plasticd run --replicas R``; one replica is the
plain ``plasticd run``), one torch thread per replica and, when the machine
has a core for each, every replica pinned to a core of its own (all its
threads, as ``taskset -a -p`` does; the single replica too), over a fresh folder whose inbox holds the same
``--files`` training samples as JSON files before the group starts. It
reports files/s (from the first ``daemon.ready`` to the last prediction),
prequential accuracy over every replica's predictions journal, the test
accuracy of the final checkpoint, and per sync the bytes and milliseconds
(``replicas.synced``), and the sync's share of the wall time (rank 0's
sync milliseconds over the run's seconds). ``--combine`` takes several
``replicas.combine`` values (each H runs once per value). ``--sizes`` adds the cost of the weights' all_reduce
alone for networks of N neurons (a 2-process gloo group on this host): the
sync cost as N grows; with H = ``replicas.sync_samples`` the cost per
learned sample is that time over H. ``--sync-samples`` takes several H:
each group of more than one replica runs once per H (one replica never
syncs, so it runs once), which measures accuracy against the sync interval.

The numbers depend on the cores free: with fewer cores than replicas the
replicas share them and the speed-up cannot appear.
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

from plasticd.bench.common import SubParsers, positive_int, run_record, write_results
from plasticd.config import Settings
from plasticd.threads import set_threads

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ScaleOptions:
    files: int = 4000
    replicas: tuple[int, ...] = (1, 2)
    sync_samples: tuple[int, ...] = (1000,)
    combine: tuple[str, ...] = ("outer",)
    agree_seconds: float = 0.1
    sizes: tuple[int, ...] = (100, 400, 1000, 4000)
    json_out: Path | None = None


def _config(settings: Settings, sync_samples: int, combine: str = "sum", agree_seconds: float = 0.02) -> str:
    m, r = settings.model, settings.replicas
    return (
        f"[model]\nneurons = {m.neurons}\niterations = {m.iterations}\n"
        f'[runtime]\nthreads = 1\ndevice = "cpu"\nseed = {settings.runtime.seed}\n'
        "[daemon]\nsettle_seconds = 0.0\nidle_seconds = 1000\n"
        f'[replicas]\nsync_samples = {sync_samples}\nsync_seconds = 5.0\ncombine = "{combine}"\n'
        f"outer_lr = {r.outer_lr}\nouter_momentum = {r.outer_momentum}\nagree_seconds = {agree_seconds}\n"
        f"sync_ramp = {r.sync_ramp}\n"
        '[log]\nformat = "json"\nlevel = "info"\n'
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_files(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    """One JSON sample file per row, as producers would drop them."""
    folder.mkdir(parents=True)
    for i in range(len(y)):
        (folder / f"s{i:06d}.json").write_text(json.dumps({"x": x[i].round(4).tolist(), "y": int(y[i])}))


def _events(log: Path, name: str) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


def _journal(root: Path) -> list[dict]:
    lines: list[dict] = []
    for path in sorted((root / "state").rglob("predictions.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def _pin(pid: int, core: int) -> None:
    """Every thread of process ``pid`` onto ``core`` (``taskset -a -p -c``; threads made later inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), {core})
        except (ProcessLookupError, PermissionError):
            continue


def _replica_pids(parent: int, replicas: int) -> list[int]:
    """The pids of ``parent``'s replica children, in rank order (a plain run: the process itself)."""
    if replicas == 1:
        return [parent]
    found: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), -1)
        rank = next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)
        if ppid == parent and rank is not None:
            found[rank] = int(entry)
    return [found[r] for r in sorted(found)]


def _journal_lines(root: Path) -> int:
    """Complete lines in every replica's journal so far (a line being written is not counted)."""
    return sum(path.read_bytes().count(b"\n") for path in (root / "state").rglob("predictions.jsonl"))


def _one_run(
    settings: Settings, staging: Path, replicas: int, sync_samples: int, opts: ScaleOptions, work: Path, combine: str = "sum"
) -> dict:
    import numpy as np
    import torch

    from plasticd.data.fashion_mnist import load_split
    from plasticd.learn.engine import Engine
    from plasticd.service.checkpoint_store import CheckpointStore

    root = work / f"replicas-{replicas}-h{sync_samples}-{combine}"
    shutil.copytree(staging, root / "data_inbox")
    (root / "plasticd.toml").write_text(_config(settings, sync_samples, combine, opts.agree_seconds))
    log = root / "group.log"
    group = ["--replicas", str(replicas)] if replicas > 1 else []
    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) >= replicas
    load = os.getloadavg()[0]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plasticd", "run", *group, "--config", str(root / "plasticd.toml")],
            cwd=root, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        try:
            while len(_events(log, "daemon.ready")) < replicas:
                if proc.poll() is not None:
                    raise RuntimeError(f"the group exited early:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
            if pinned:  # each replica on a core of its own, the one replica on one core
                for rank, pid in enumerate(_replica_pids(proc.pid, replicas)):
                    _pin(pid, cores[rank])
            t0 = time.perf_counter()
            while _journal_lines(root) < opts.files:
                if proc.poll() is not None:
                    raise RuntimeError(f"the group exited early:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
            seconds = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
    journal = _journal(root)
    correct = [r["predicted"] == r["label"] for r in journal if r.get("label", -1) >= 0]
    synced = [e for e in _events(log, "replicas.synced") if e["rank"] == 0]
    test = load_split(settings.paths.dataset, "test")
    loaded = CheckpointStore(root / "checkpoints").load_latest()
    assert loaded is not None, "no checkpoint written"
    engine = Engine.from_settings(settings, device="cpu")
    engine.load_state(loaded.tensors, loaded.meta)
    accuracy = engine.evaluate(torch.from_numpy(test.x), torch.from_numpy(test.y))
    return {
        "replicas": replicas,
        "sync_samples": sync_samples if replicas > 1 else None,
        "combine": combine if replicas > 1 else None,
        "pinned": pinned,
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "seconds": seconds,
        "sync_share": sum(e["ms"] for e in synced) / 1e3 / seconds if synced else 0.0,
        "files": opts.files,
        "files_per_s": opts.files / seconds,
        "prequential_accuracy": float(np.mean(correct)) if correct else None,
        "test_accuracy": accuracy,
        "syncs": len(synced),
        "sync_bytes": synced[-1]["bytes"] if synced else 0,
        "sync_ms_mean": float(np.mean([e["ms"] for e in synced])) if synced else None,
        "turn_us_mean": float(np.mean([e["turn_us"] for e in synced])) if synced else None,
        "trained_in_checkpoint": (loaded.meta.get("replicas") or {}).get("trained", engine.metrics.trained),
    }


def _allreduce_worker(rank: int, port: int, sizes: tuple[int, ...], input_dim: int, classes: int, moments: int, out: str) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    set_threads(1)
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=rank == 0, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    results = {}
    for n in sizes:
        params = input_dim * n + n + n * n + n * classes + classes
        numel = (2 + moments) * params + 2 * input_dim  # two copies, the optimizer's moments, the scaler
        flat = torch.ones(numel)
        dist.all_reduce(flat)  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            dist.all_reduce(flat)
            times.append(time.perf_counter() - t)
        results[n] = {"bytes": numel * 4, "ms": 1e3 * min(times)}
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def sync_cost(sizes: tuple[int, ...], input_dim: int, classes: int, work: Path, moments: int = 2) -> dict:
    """The all_reduce of N-neuron networks' weights (both copies, dense N x N recurrent weights) and ``moments``
    optimizer moments per weight (Adam: 2, SGD with momentum: 1, plain SGD: 0) between 2 processes."""
    import torch.multiprocessing as mp

    port = _free_port()
    out = work / "allreduce.json"
    mp.spawn(_allreduce_worker, args=(port, sizes, input_dim, classes, moments, str(out)), nprocs=2, join=True)
    return {int(k): v for k, v in json.loads(out.read_text()).items()}


def run_scale_bench(settings: Settings, opts: ScaleOptions) -> dict:
    import numpy as np

    from plasticd.data.fashion_mnist import load_split
    from plasticd.data.stream import epoch_order

    train = load_split(settings.paths.dataset, "train")
    order = epoch_order(len(train.y), settings.runtime.seed, 0)[: opts.files]
    print(
        f"plasticd bench scale: {opts.files} Fashion-MNIST files, replicas {list(opts.replicas)}, 1 torch thread each, "
        f"H = {list(opts.sync_samples)}, N = {settings.model.neurons}; {os.cpu_count()} cores on this machine",
        flush=True,
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="plasticd-scale-") as tmp:
        work = Path(tmp)
        staging = work / "staging"
        _write_files(staging, np.asarray(train.x[order]), np.asarray(train.y[order]))
        plan = [
            (r, h, c)
            for r in opts.replicas
            for h in (opts.sync_samples if r > 1 else opts.sync_samples[:1])
            for c in (opts.combine if r > 1 else opts.combine[:1])
        ]
        for r, h, c in plan:
            result = _one_run(settings, staging, r, h, opts, work, c)
            runs.append(result)
            at = f" H={h} {c}" if r > 1 else ""
            print(
                f"  {r} replica(s){at}: {result['files_per_s']:.0f} files/s, prequential {result['prequential_accuracy']:.4f}, "
                f"test {result['test_accuracy']:.4f}, {result['syncs']} syncs of {result['sync_bytes']} B "
                f"({result['sync_ms_mean'] or 0:.1f} ms each, {100 * result['sync_share']:.1f}% of the wall time), "
                f"agreement {result['turn_us_mean'] or 0:.0f} us per turn; pinned {result['pinned']}, "
                f"load {result['load_before']} -> {result['load_after']}",
                flush=True,
            )
        t = settings.train
        moments = 2 if t.optimizer in ("adam", "adamw") else int(t.momentum > 0)
        costs = sync_cost(opts.sizes, settings.model.input_dim, settings.model.num_classes, work, moments) if opts.sizes else {}
    for n, c in costs.items():
        print(
            f"  sync cost N={n}: {c['bytes'] / 1e6:.2f} MB, {c['ms']:.1f} ms all_reduce (2 processes, this host); "
            "per learned sample: " + ", ".join(f"{c['ms'] / h * 1e3:.1f} us at H={h}" for h in opts.sync_samples),
            flush=True,
        )
    record = run_record(opts, settings.model_dump_json(), runs=runs, sync_cost=costs)
    if opts.json_out is not None:
        write_results(opts.json_out, record)
    return record


def register(subparsers: SubParsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "scale",
        help="replicas: 1 against 2 on the same Fashion-MNIST files through the real inbox; sync cost against N",
        description="Run real replica groups (plasticd run --replicas, gloo, 1 torch thread and, cores allowing, 1 pinned core "
        "each) over the same Fashion-MNIST files: "
        "files/s, prequential and test accuracy, bytes and ms per sync; then the weights' all_reduce alone for "
        "networks of --sizes neurons.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--files", type=positive_int, default=4000, help="Fashion-MNIST training files (default 4000)")
    p.add_argument("--replicas", type=positive_int, nargs="+", default=[1, 2], help="group sizes (default 1 2)")
    p.add_argument(
        "--sync-samples", type=positive_int, nargs="+",
        help="H: replicas.sync_samples, one run of each group of 2+ replicas per value (default: the setting's)",
    )  # fmt: skip
    p.add_argument(
        "--combine", nargs="+", choices=["sum", "mean", "outer"],
        help="replicas.combine, one run of each group of 2+ replicas per value and H (default: the setting's)",
    )  # fmt: skip
    p.add_argument("--agree-seconds", type=float, help="replicas.agree_seconds of the groups (default: the setting's)")
    p.add_argument("--sizes", type=positive_int, nargs="*", default=[100, 400, 1000, 4000], help="N for the sync cost")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=run)
    return p


def run(settings: Settings, args: argparse.Namespace) -> int:
    opts = ScaleOptions(
        files=args.files, replicas=tuple(args.replicas), sizes=tuple(args.sizes),
        sync_samples=tuple(args.sync_samples or [settings.replicas.sync_samples]),
        combine=tuple(args.combine or [settings.replicas.combine]),
        agree_seconds=settings.replicas.agree_seconds if args.agree_seconds is None else args.agree_seconds,
        json_out=args.json,
    )  # fmt: skip
    run_scale_bench(settings, opts)
    return 0
