"""``plasticd bench step``: the cost of one sample, and whether cost follows the network's size.

Every contender runs in a fresh process with one torch thread, one after the
other, in rounds (timing on a shared machine is noisy: every ratio is taken
within one round, and the table gives the median and the range over rounds):

* ``mlp``: a bare in-process per-sample loop of a dense MLP with the same width
  (Linear(D, N) → ReLU → Linear(N, C), autograd, torch.optim.Adam): predict
  (the predicted class read back, as an online learner must), then one step;
* ``engine``: ``Engine.step`` per sample, in process, default settings;
* ``ingest``: ``plasticd ingest`` with ``train.max_batch = 1`` over the same
  samples as one ``.json`` file each (claims, journal, checkpoints, moves: the
  whole daemon path), timed from the worker's start to the drained folder;
* ``ingest-small-N`` / ``ingest-small-400``: ingest over a 10-feature stream
  (the rotating hyperplane) with N (default 64) and 400 neurons, micro-batched
  as the daemon is under backlog (``train.max_batch``).

Ratios printed: ingest / mlp and engine / mlp (target ingest ≥ 1.0), and the
files/s of the small network over 400 neurons (target ≥ 3).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from plasticd.bench.common import SubParsers, positive_int, write_results
from plasticd.config import Settings
from plasticd.threads import set_threads


@dataclass(frozen=True)
class StepBenchOptions:
    samples: int = 1500  # samples per contender run
    rounds: int = 3
    small: int = 64  # neurons of the small network on the 10-feature stream
    clock: str = "wall"  # "wall", or "cpu": samples per CPU-second of the contender's process
    json_out: Path | None = None


def _clock(kind: str) -> float:
    """Seconds: wall time, or this process's CPU time (every thread's; what a busy shared host cannot steal)."""
    if kind == "cpu":
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    return time.perf_counter()


def _mlp(settings_json: str, x_path: str, warmup: int, clock: str) -> float:
    """Samples/s of the bare per-sample MLP + Adam loop (one thread)."""
    import numpy as np
    import torch

    set_threads(1)
    s = Settings.model_validate_json(settings_json)
    data = np.load(x_path)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    torch.manual_seed(0)
    m = s.model
    net = torch.nn.Sequential(torch.nn.Linear(m.input_dim, m.neurons), torch.nn.ReLU(), torch.nn.Linear(m.neurons, m.num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    correct = 0
    start = 0.0
    for i in range(len(y)):
        if i == warmup:
            start = _clock(clock)
        logits = net(x[i : i + 1])
        correct += int(logits.argmax(dim=1).item() == int(y[i]))
        loss = torch.nn.functional.cross_entropy(logits, y[i : i + 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (len(y) - warmup) / (_clock(clock) - start)


def _engine(settings_json: str, x_path: str, warmup: int, clock: str) -> float:
    """Samples/s of ``Engine.step`` per sample, in process (one thread)."""
    import numpy as np
    import torch

    from plasticd.learn.engine import Engine

    set_threads(1)
    s = Settings.model_validate_json(settings_json)
    data = np.load(x_path)
    x, y = torch.from_numpy(data["x"]), data["y"]
    engine = Engine.from_settings(s, device="cpu")
    start = 0.0
    for i in range(len(y)):
        if i == warmup:
            start = _clock(clock)
        engine.step(x[i : i + 1], y[i : i + 1])
    return (len(y) - warmup) / (_clock(clock) - start)


def _ingest(settings_json: str, folder: str, root: str, clock: str) -> float:
    """Files/s of ``plasticd ingest`` over ``folder`` (the worker's own clock: no imports, no start-up)."""

    from plasticd import log
    from plasticd.service.daemon import run_ingest

    s = Settings.model_validate_json(settings_json)
    set_threads(s.runtime.threads)
    log.configure(level="warning", fmt="json")
    start = _clock(clock)
    summary = run_ingest(s, Path(folder), Path(root) / "done", progress=False)
    # wall: the worker's own clock (no imports, no start-up); cpu: the whole call, start-up and final save included
    return summary.files_processed / (summary.seconds if clock == "wall" else _clock(clock) - start)


def _write_files(folder: Path, x: object, y: object) -> None:
    import numpy as np

    xs, ys = np.asarray(x), np.asarray(y)
    folder.mkdir(parents=True)
    for i in range(len(ys)):
        (folder / f"s{i:06d}.json").write_text(json.dumps({"x": np.round(xs[i], 4).tolist(), "y": int(ys[i])}))


def run_step_bench(settings: Settings, opts: StepBenchOptions) -> dict:
    import numpy as np

    from plasticd.bench.streams import build_stream
    from plasticd.data.fashion_mnist import load_split

    train = load_split(settings.paths.dataset, "train")
    n = opts.samples
    small = build_stream("hyperplane-incremental", n, seed=settings.runtime.seed)
    base = _with(settings, runtime={"threads": 1}, train={"max_batch": 1})
    batch = settings.train.max_batch  # the small-network comparison runs as the daemon does under backlog
    ctx = multiprocessing.get_context("spawn")
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="plasticd-step-") as tmp:
        t = Path(tmp)
        arrays = t / "fashion.npz"
        np.savez(arrays, x=train.x[:n], y=train.y[:n])
        _write_files(t / "fashion", train.x[:n], train.y[:n])
        _write_files(t / "small", small.x, small.y)
        print(
            f"plasticd bench step: {n} samples per run, {opts.rounds} round(s), one torch thread per contender, "
            f"{opts.clock} clock; "
            f"ingest of Fashion-MNIST with max_batch 1, of the 10-feature stream with max_batch {batch}"
        )
        for r in range(opts.rounds):
            jobs: dict[str, tuple[object, Settings, object]] = {
                "mlp": (_mlp, base, arrays),
                "engine": (_engine, base, arrays),
                "ingest": (_ingest, base, "fashion"),
                f"ingest-small-{opts.small}": (_ingest, _small(base, small.num_classes, opts.small, batch), "small"),
                "ingest-small-400": (_ingest, _small(base, small.num_classes, 400, batch), "small"),
            }
            for name, (fn, s, data) in jobs.items():
                with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    if fn is _ingest:
                        root = t / f"run-{name}-{r}"
                        s = _with(s, paths={"root": str(root)})
                        folder = root / "todo"
                        folder.parent.mkdir()
                        (t / str(data)).rename(folder)
                        rate = pool.submit(_ingest, s.model_dump_json(), str(folder), str(root), opts.clock).result()
                        (root / "done").rename(t / str(data))  # the same files for the next round
                    else:
                        learner = _mlp if fn is _mlp else _engine
                        rate = pool.submit(learner, s.model_dump_json(), str(data), min(100, n // 10), opts.clock).result()
                rows.setdefault(name, []).append(rate)
            print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rows.items()))
    ratios = {
        "ingest / mlp": [a / b for a, b in zip(rows["ingest"], rows["mlp"], strict=True)],
        "engine / mlp": [a / b for a, b in zip(rows["engine"], rows["mlp"], strict=True)],
        f"{opts.small} / 400 neurons (10 features)": [
            a / b for a, b in zip(rows[f"ingest-small-{opts.small}"], rows["ingest-small-400"], strict=True)
        ],
    }
    print(f"{'contender':<20} {'samples/s median':>16} {'range':>15}")
    for name, values in rows.items():
        print(f"{name:<20} {statistics.median(values):16.0f} {min(values):7.0f}-{max(values):<7.0f}")
    goals = {"ingest / mlp": 1.0, "engine / mlp": None, f"{opts.small} / 400 neurons (10 features)": 3.0}
    print("ratios (within each round; median, range):")
    for name, values in ratios.items():
        goal = goals[name]
        verdict = "" if goal is None else f"  (target >= {goal:g}) {'met' if statistics.median(values) >= goal else 'MISSED'}"
        print(f"  {name:<34} {statistics.median(values):5.2f}  {min(values):.2f}-{max(values):.2f}{verdict}")
    return {"options": {**asdict(opts), "json_out": None}, "samples_per_s": rows, "ratios": ratios}


def _small(base: Settings, classes: int, neurons: int, batch: int) -> Settings:
    return _with(base, model={"input_dim": 10, "num_classes": classes, "neurons": neurons}, train={"max_batch": batch})


def _with(settings: Settings, **sections: dict) -> Settings:
    """``settings`` with some fields of some sections replaced (settings are frozen)."""
    data = settings.model_dump(mode="json")
    for section, fields in sections.items():
        data[section].update(fields)
    return Settings.model_validate(data)


def register(subparsers: SubParsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "step",
        help="per-sample cost: ingest and the Engine against a bare MLP loop; 64 against 400 neurons",
        description="Per-sample speed, one torch thread per contender, each in a fresh process, in rounds: a bare "
        "per-sample MLP + Adam loop of the same width, Engine.step per sample, plasticd ingest with max_batch 1 over "
        "the same Fashion-MNIST samples as .json files, and ingest of a 10-feature stream with a small network and "
        "with 400 neurons. Prints samples/s and the ratios the speed targets are stated in (median and range over rounds).",
    )
    p.add_argument("--samples", type=positive_int, default=1500, help="samples per run (default 1500)")
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds of every contender (default 3)")
    p.add_argument("--small", type=positive_int, default=64, help="neurons of the small network (default 64)")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time (default), or each process's CPU time: samples per CPU-second, for a busy shared host",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=run)
    return p


def run(settings: Settings, args: argparse.Namespace) -> int:
    opts = StepBenchOptions(samples=args.samples, rounds=args.rounds, small=args.small, clock=args.clock, json_out=args.json)
    results = run_step_bench(settings, opts)
    if opts.json_out:
        write_results(opts.json_out, results)
    return 0
