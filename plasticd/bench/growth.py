"""``plasticd bench growth``: does growing from a small network pay?

Per seed, three contenders see the same Fashion-MNIST stream (same order),
each predicting every sample before learning from it, each in a fresh
process, in this order:

    grown        starts at --start-neurons with growth on (settings' [growth], enabled forced)
    fixed-start  the same start size, growth off
    fixed-final  growth off, at the size the grown network ended with (so it runs last)

Reported per contender: prequential accuracy (whole stream and last window),
test accuracy on the 10k test set, training seconds (the stream loop,
growth checks included), final N and parameter count; then the grown
network's N and parameters over the stream, the ratios the issue's targets
name, and the final N over seeds (mean ± std).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from plasticd.bench.common import (
    SubParsers,
    mean_std,
    positive_int,
    run_record,
    write_results,
)
from plasticd.config import Settings
from plasticd.threads import set_threads

if TYPE_CHECKING:
    from plasticd.learn.engine import Engine

CONTENDERS = ("grown", "fixed-start", "fixed-final")


@dataclass(frozen=True)
class GrowthBenchOptions:
    samples: int = 60000  # training samples per pass
    epochs: int = 1  # passes over the stream
    micro_batch: int = 1  # samples per step
    seeds: int = 3  # seeds 0..seeds-1 (runtime.seed is the first)
    start_neurons: int = 64  # size the grown and fixed-start networks begin with
    trace_points: int = 10  # how often N and the parameter count are recorded over the stream
    json_out: Path | None = None


@dataclass
class GrowthResult:
    name: str
    seed: int
    prequential_accuracy: float
    window_accuracy: float
    test_accuracy: float
    train_seconds: float  # wall clock of the stream loop
    cpu_seconds: float  # CPU time of the same loop: robust to other processes on a shared machine
    neurons: int
    params: int
    trace: list[tuple[int, int, int]] = field(default_factory=list)  # (samples, N, params) over the stream
    growths: list[str] = field(default_factory=list)  # one line per check that changed the size


def param_count(engine: Engine) -> int:
    """Trainable weights of the live network: dense input and readout, *active* recurrent connections."""
    n, d, c = engine.cfg.neurons, engine.cfg.input_dim, engine.cfg.output_dim
    return n * d + n + engine.active_connections + c * n + c


def _settings_for(base: Settings, name: str, seed: int, neurons: int) -> Settings:
    grow = name == "grown"
    return base.model_copy(
        update={
            "model": base.model.model_copy(update={"neurons": neurons}),
            "growth": base.growth.model_copy(update={"enabled": grow}),
            "runtime": base.runtime.model_copy(update={"seed": seed}),
        }
    )


def _run(name: str, settings_json: str, seed: int, neurons: int, opts: GrowthBenchOptions) -> GrowthResult:
    """Runs in a fresh process: one prequential run of one contender, then the test set."""
    import torch

    from plasticd.data.fashion_mnist import load_split
    from plasticd.data.stream import stream_batches
    from plasticd.learn.engine import Engine
    from plasticd.learn.reports import GrowthReport

    settings = _settings_for(Settings.model_validate_json(settings_json), name, seed, neurons)
    set_threads(settings.runtime.threads)
    train = load_split(settings.paths.dataset, "train")
    test = load_split(settings.paths.dataset, "test")
    engine = Engine.from_settings(settings)
    total = min(opts.samples, len(train)) * opts.epochs
    every = max(1, total // opts.trace_points)
    trace, growths, next_mark = [(0, engine.cfg.neurons, param_count(engine))], [], every
    start, cpu_start = time.perf_counter(), time.process_time()
    for b in stream_batches(train, opts.micro_batch, seed, opts.epochs, opts.samples):
        engine.step(b.x, b.y)
        for r in engine.take_reports():
            if isinstance(r, GrowthReport) and r.changed:
                growths.append(
                    f"{engine.metrics.trained:>7} samples: {r.neurons_before} -> {r.neurons_after} "
                    f"(divided {r.divided}, gradmax {r.gradmax}, retired {r.retired}); {r.reason}"
                )
        if engine.metrics.trained >= next_mark:
            trace.append((engine.metrics.trained, engine.cfg.neurons, param_count(engine)))
            next_mark += every
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    snap = engine.snapshot()
    return GrowthResult(
        name=name,
        seed=seed,
        prequential_accuracy=snap.accuracy or 0.0,
        window_accuracy=snap.window_accuracy or 0.0,
        test_accuracy=engine.evaluate(torch.from_numpy(test.x), torch.from_numpy(test.y)),
        train_seconds=seconds,
        cpu_seconds=cpu_seconds,
        neurons=engine.cfg.neurons,
        params=param_count(engine),
        trace=trace,
        growths=growths,
    )


# --------------------------------------------------------------------- report


def _table(results: list[GrowthResult]) -> str:
    head = (
        f"{'seed':>4} {'contender':<12} {'preq acc':>8} {'last win':>8} {'test acc':>8} {'train s':>8} {'cpu s':>7} "
        f"{'final N':>7} {'params':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.seed:>4} {r.name:<12} {r.prequential_accuracy:8.4f} {r.window_accuracy:8.4f} {r.test_accuracy:8.4f} "
            f"{r.train_seconds:8.1f} {r.cpu_seconds:7.1f} {r.neurons:>7} {r.params:>8}"
        )
    return "\n".join(lines)


def _summary(results: list[GrowthResult]) -> str:
    by = {(r.name, r.seed): r for r in results}
    seeds = sorted({r.seed for r in results})
    rows = [(by[("grown", s)], by[("fixed-start", s)], by[("fixed-final", s)]) for s in seeds]
    time_ratio = [g.cpu_seconds / f.cpu_seconds for g, _, f in rows]  # CPU time: other processes share the machine
    wall_ratio = [g.train_seconds / f.train_seconds for g, _, f in rows]
    vs_final = [100 * (g.test_accuracy - f.test_accuracy) for g, _, f in rows]
    vs_start = [100 * (g.test_accuracy - s.test_accuracy) for g, s, _ in rows]
    final_n = [float(g.neurons) for g, _, _ in rows]

    def mean(v: list[float]) -> float:
        return statistics.mean(v)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def over(label: str, attr: str, fmt: str = "{:.4f}") -> str:
        g, s, f = ([getattr(r[i], attr) for r in rows] for i in range(3))
        return f"  {label:<18} grown {mean_std(g, fmt)}   fixed-start {mean_std(s, fmt)}   fixed-final {mean_std(f, fmt)}"

    lines = [
        "over seeds (mean ± std):",
        over("test accuracy", "test_accuracy"),
        over("train seconds", "train_seconds", "{:.1f}"),
        over("train CPU seconds", "cpu_seconds", "{:.1f}"),
        f"  final N (grown)    {mean_std(final_n, '{:.0f}')}   per seed {[int(n) for n in final_n]}",
        "targets:",
        (
            f"  test acc grown - fixed-final  {mean(vs_final):+.2f} points (per seed {[round(v, 2) for v in vs_final]})  "
            f"(target ≥ -0.50)  {verdict(mean(vs_final) >= -0.5)}"
        ),
        (
            f"  train time grown / fixed-final {mean(time_ratio):.2f} CPU (per seed {[round(v, 2) for v in time_ratio]}; "
            f"wall {mean(wall_ratio):.2f})  (target ≤ 0.80)  {verdict(mean(time_ratio) <= 0.8)}"
        ),
        (
            f"  test acc grown - fixed-start  {mean(vs_start):+.2f} points (per seed {[round(v, 2) for v in vs_start]})  "
            f"(target: clearly better, ≥ +0.50 on average and on every seed)  "
            f"{verdict(mean(vs_start) >= 0.5 and min(vs_start) > 0)}"
        ),
    ]
    return "\n".join(lines)


def _trace(results: list[GrowthResult]) -> str:
    lines = ["grown network over the stream (samples: N / params):"]
    for r in (r for r in results if r.name == "grown"):
        points = "  ".join(f"{t / 1000:g}k: {n}/{p // 1000}k" for t, n, p in r.trace)
        lines.append(f"  seed {r.seed}: {points}")
        lines += [f"    {g}" for g in r.growths]
    return "\n".join(lines)


def run_growth_bench(settings: Settings, opts: GrowthBenchOptions) -> int:
    import torch

    from plasticd.data.fashion_mnist import load_split

    load_split(settings.paths.dataset, "test")  # fail fast, with the how-to-get-it message
    threads = settings.runtime.threads or torch.get_num_threads()
    g = settings.growth
    print(
        f"plasticd bench growth: {opts.samples} samples × {opts.epochs} pass(es), micro-batch {opts.micro_batch}, "
        f"seeds {settings.runtime.seed}..{settings.runtime.seed + opts.seeds - 1}, {threads} torch thread(s), "
        f"start N={opts.start_neurons}, growth every {g.interval} samples, horizon {g.horizon}, "
        f"grow {g.grow_fraction:g}×N (division share {g.division_share:g}), max N {g.max_neurons}",
        flush=True,
    )
    settings_json = settings.model_dump_json()
    ctx = multiprocessing.get_context("spawn")
    results: list[GrowthResult] = []
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
        for seed in range(settings.runtime.seed, settings.runtime.seed + opts.seeds):
            final_n = opts.start_neurons
            for name in CONTENDERS:
                n = final_n if name == "fixed-final" else opts.start_neurons
                r = pool.submit(_run, name, settings_json, seed, n, opts).result()
                final_n = r.neurons if name == "grown" else final_n
                results.append(r)
                print(
                    f"  seed {seed} {name:<12} N {r.neurons:>5}  preq {r.prequential_accuracy:.4f}  "
                    f"test {r.test_accuracy:.4f}  {r.train_seconds:6.1f} s ({r.cpu_seconds:.1f} s CPU)",
                    flush=True,
                )
    print()
    print(_table(results))
    print()
    print(_trace(results))
    print()
    print(_summary(results))
    if opts.json_out is not None:
        write_results(opts.json_out, run_record(opts, settings_json, results=[asdict(r) for r in results]))
    return 0


# ---------------------------------------------------------------- command line


def register(subparsers: SubParsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "growth",
        help="does growing from a small network pay? grown against fixed networks on the same stream",
        description="A network grown from --start-neurons (settings' [growth], enabled) against fixed networks of "
        "the start size and of the grown final size, on the same Fashion-MNIST stream, each in a fresh process; "
        "accuracy, training time, N over time, and the final N over seeds (mean ± std).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--samples", type=positive_int, default=60000, help="training samples per pass (default 60000)")
    p.add_argument("--epochs", type=positive_int, default=1, help="passes over the training stream (default 1)")
    p.add_argument("--start-neurons", type=positive_int, default=64, help="size the grown network starts at (default 64)")
    p.add_argument("--growth-seeds", type=positive_int, default=3, help="seeds, from runtime.seed on (default 3)")
    p.add_argument(
        "--micro-batch", "--growth-batch", dest="micro_batch", type=positive_int, default=1,
        help="samples per engine step (default 1)",
    )  # fmt: skip
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=run)
    return p


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``plasticd bench growth`` with its parsed options."""
    opts = GrowthBenchOptions(
        samples=args.samples, epochs=args.epochs, micro_batch=args.micro_batch, seeds=args.growth_seeds,
        start_neurons=args.start_neurons, json_out=args.json,
    )  # fmt: skip
    return run_growth_bench(settings, opts)
