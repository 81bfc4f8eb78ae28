"""``plasticd bench evolve``: evolution on, evolution off, the static network and a hindsight grid, in one run.

Every contender learns every stream in process, prequentially, in micro-batches
of ``--batch`` samples (the daemon's backlog batches, ``train.max_batch``): each
sample is predicted before the step that learns from it.

    on       a Population: the champion and ``evolution.population`` challengers (evolution.* settings)
    off      one Engine with the settings (evolution off: today's network)
    static   one Engine without rewiring or growth
    grid:…   one Engine per genome of the grid (N × K × rewiring × lr scale); the best per stream, in
             hindsight, is the grid's row of the report

Per stream: prequential accuracy, samples/s, the champion's modelled work per
sample and measured µs per sample, the population's µs per sample, and (on)
the final champion's genome and the promotions. ``fashion-mnist`` is the
60,000 training images in the seeded stream order, then the 10,000 test images
(its test accuracy is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plasticd.bench.common import SubParsers, positive_int, run_record, write_results
from plasticd.bench.streams import CONTROL, STREAMS, build_stream
from plasticd.config import Settings
from plasticd.threads import set_threads

if TYPE_CHECKING:
    from plasticd.bench.streams import Stream

FASHION = "fashion-mnist"
BASE = ("on", "off", "static")


@dataclass(frozen=True)
class EvolveOptions:
    streams: tuple[str, ...] = tuple(s for s in STREAMS if s != CONTROL)
    contenders: tuple[str, ...] = (*BASE, "grid")
    samples: int | None = None
    batch: int = 8
    grid_neurons: tuple[int, ...] = (64, 400, 1000)
    grid_iterations: tuple[int, ...] = (1, 3, 5)
    grid_rewiring: tuple[bool, ...] = (False, True)
    grid_lr: tuple[float, ...] = (0.3, 1.0, 3.0)
    seed: int = 0
    jobs: int = 1
    json_out: Path | None = None
    markdown_out: Path | None = None

    def grid(self) -> list[str]:
        cells = product(self.grid_neurons, self.grid_iterations, self.grid_rewiring, self.grid_lr)
        return [f"grid:N{n}:K{k}:rw{int(r)}:lr{lr:g}" for n, k, r, lr in cells]

    def contender_names(self) -> list[str]:
        return [c for c in self.contenders if c != "grid"] + (self.grid() if "grid" in self.contenders else [])


@dataclass
class Result:
    stream: str
    contender: str
    samples: int
    prequential: float
    samples_per_s: float
    work_per_sample: float  # the (final) champion's modelled multiply-adds per labelled sample
    champion_us: float  # measured µs per sample of the champion's steps
    population_us: float  # measured µs per sample of everything (= champion_us without evolution)
    test: float | None = None  # fashion-mnist: accuracy on the test set after the pass
    extra: dict = field(default_factory=dict)


def _settings_for(settings: Settings, contender: str, stream: Stream) -> Settings:
    from plasticd.bench.contenders import stream_settings
    from plasticd.evolution.genome import Genome

    s = stream_settings(settings, stream, 0)
    s = s.model_copy(update={"runtime": settings.runtime.model_copy(update={"threads": 1, "device": "cpu"})})
    enabled = contender == "on"
    s = s.model_copy(update={"evolution": s.evolution.model_copy(update={"enabled": enabled})})
    if contender == "static":
        return Genome.from_settings(s).with_gene("rewiring", False).with_gene("growth", False).apply(s)
    if contender.startswith("grid:"):
        _, n, k, rw, lr = contender.split(":")
        g = Genome.from_settings(s)
        g = g.with_gene("neurons", int(n[1:])).with_gene("iterations", int(k[1:]))
        return g.with_gene("rewiring", rw == "rw1").with_gene("lr_scale", float(lr[2:])).apply(s)
    return s


def _stream(name: str, opts: EvolveOptions, dataset: Path) -> tuple[Stream, Any]:
    """The stream (and, for fashion-mnist, its test split)."""
    if name != FASHION:
        return build_stream(name, opts.samples, opts.seed, dataset), None
    from plasticd.bench.streams import Stream
    from plasticd.data.fashion_mnist import load_split
    from plasticd.data.stream import epoch_order

    train, test = load_split(dataset, "train"), load_split(dataset, "test")
    order = epoch_order(len(train), opts.seed, 0, opts.samples)
    stream = Stream(FASHION, "real", train.x[order], train.y[order], 10, (), "Fashion-MNIST, one pass, then the test set")
    return stream, test


def _run_job(name: str, contender: str, settings_json: str, opts: EvolveOptions) -> Result:
    import numpy as np
    import torch

    from plasticd.errors import NonFiniteError
    from plasticd.evolution.budget import work_per_sample
    from plasticd.evolution.population import Population
    from plasticd.learn.engine import Engine

    set_threads(1)
    base = Settings.model_validate_json(settings_json)
    stream, test = _stream(name, opts, base.paths.dataset)
    settings = _settings_for(base, contender, stream)
    learner: Engine | Population = Population(settings, "cpu") if contender == "on" else Engine.from_settings(settings, "cpu")
    x, y = torch.from_numpy(stream.x), stream.y
    correct = np.zeros(stream.n, dtype=bool)
    t0 = time.perf_counter()
    for i in range(0, stream.n, opts.batch):
        with contextlib.suppress(NonFiniteError):  # nothing changed; the batch counts as misses
            correct[i : i + opts.batch] = (
                learner.step(x[i : i + opts.batch], y[i : i + opts.batch]).predicted == y[i : i + opts.batch]
            )
    seconds = time.perf_counter() - t0
    champion = learner.champion if isinstance(learner, Population) else learner
    extra: dict[str, Any] = {}
    champion_seconds = seconds
    if isinstance(learner, Population):
        champion_seconds = learner.seconds["champion"]
        extra = {"champion": learner.candidates[0].describe(), "promotions": learner.promotions,
                 "candidates": [c.genome.label() for c in learner.candidates], "budget": learner.budget.to_dict(),
                 "seconds": learner.seconds}  # fmt: skip
    score = None
    if test is not None:
        score = champion.evaluate(torch.from_numpy(test.x), torch.from_numpy(test.y))
    return Result(
        stream=name, contender=contender, samples=stream.n, prequential=float(correct.mean()),
        samples_per_s=stream.n / seconds, work_per_sample=work_per_sample(champion),
        champion_us=champion_seconds * 1e6 / stream.n, population_us=seconds * 1e6 / stream.n, test=score, extra=extra,
    )  # fmt: skip


def run_evolve(settings: Settings, opts: EvolveOptions) -> int:
    contenders = opts.contender_names()
    jobs = [(s, c) for s in opts.streams for c in contenders]
    print(f"plasticd bench evolve: {len(opts.streams)} streams × {len(contenders)} contenders, batches of {opts.batch}, "
          f"seed {opts.seed}, {opts.jobs} process(es)", flush=True)  # fmt: skip
    settings_json = settings.model_dump_json()
    results: list[Result] = []
    t0 = time.perf_counter()

    def done(r: Result) -> None:
        results.append(r)
        print(f"  [{len(results)}/{len(jobs)}] {r.stream:<24} {r.contender:<22} preq {r.prequential:.4f} "
              f"{r.samples_per_s:7.0f}/s  work {r.work_per_sample:9.0f}", flush=True)  # fmt: skip

    if opts.jobs <= 1:
        for s, c in jobs:
            done(_run_job(s, c, settings_json, opts))
    else:
        with ProcessPoolExecutor(max_workers=opts.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for f in [pool.submit(_run_job, s, c, settings_json, opts) for s, c in jobs]:
                done(f.result())
    report = format_report(results, opts)
    print("\n" + report + f"\n\n{len(results)} runs in {time.perf_counter() - t0:.0f} s")
    if opts.markdown_out is not None:
        opts.markdown_out.write_text(report + "\n")
    if opts.json_out is not None:
        write_results(opts.json_out, run_record(opts, settings_json, results=[asdict(r) for r in results]))
    return 0


def format_report(results: list[Result], opts: EvolveOptions) -> str:
    by = {(r.stream, r.contender): r for r in results}
    streams = [s for s in opts.streams if any(k[0] == s for k in by)]
    cols = [c for c in BASE if any(k[1] == c for k in by)]
    grid = [c for c in opts.grid() if any(k[1] == c for k in by)]
    head = [*cols, *(["grid best (hindsight)"] if grid else [])]
    lines = ["| stream | " + " | ".join(f"`{c}`" for c in cols) + (" | grid best (hindsight) | its genome" if grid else "")
             + " | champion genome (on) | promotions | work on/off | µs/sample on/off | samples/s on/off |",
             "| --- |" + " ---: |" * len(head) + (" --- |" if grid else "") + " --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    means: dict[str, list[float]] = {c: [] for c in head}
    for s in streams:
        cells = []
        for c in cols:
            r = by.get((s, c))
            cells.append(f"{100 * r.prequential:.1f}" if r else "–")
            if r:
                means[c].append(r.prequential)
        if grid:
            best = max((by[(s, g)] for g in grid if (s, g) in by), key=lambda r: r.prequential)
            cells += [f"{100 * best.prequential:.1f}", best.contender[5:]]
            means["grid best (hindsight)"].append(best.prequential)
        on, off = by.get((s, "on")), by.get((s, "off"))
        genome = on.extra["champion"]["label"] if on else "–"
        promos = str(on.extra["promotions"]) if on else "–"
        ratio = (f"{on.work_per_sample / off.work_per_sample:.2f}", f"{on.population_us:.0f}/{off.population_us:.0f}",
                 f"{on.samples_per_s:.0f}/{off.samples_per_s:.0f} ({on.samples_per_s / off.samples_per_s:.2f}×)")\
            if on and off else ("–", "–", "–")  # fmt: skip
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {genome} | {promos} | " + " | ".join(ratio) + " |")
    mean_cells = [f"**{100 * sum(v) / len(v):.2f}**" if v else "–" for v in means.values()]
    if grid:
        mean_cells.append("")
    lines.append("| **mean** | " + " | ".join(mean_cells) + " | | | | | |")
    tests = [r for r in results if r.test is not None]
    if tests:
        lines += ["", "| Fashion-MNIST | prequential | test | samples/s |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| `{r.contender}` | {r.prequential:.4f} | {r.test:.4f} | {r.samples_per_s:.0f} |" for r in tests]
    return "\n".join(lines)


def _bools(text: str) -> bool:
    return text.lower() in ("1", "true", "on", "yes")


def register(subparsers: SubParsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evolve",
        help="evolution on / off / static / a hindsight grid, on the drift streams and Fashion-MNIST",
        description="Every contender learns every stream in process, prequentially, in micro-batches (--batch): "
        "'on' is the population (evolution.* settings), 'off' one network with the settings, 'static' one network "
        "without rewiring or growth, 'grid' one network per genome of N x K x rewiring x lr scale (the best per "
        "stream in hindsight is reported). Per stream: prequential accuracy, the final champion's genome, "
        "promotions, modelled work and measured µs per sample, samples/s. Seeded by runtime.seed.",
    )
    p.add_argument("--streams", nargs="+", choices=(*STREAMS, FASHION), default=list(EvolveOptions.streams),
                   metavar="NAME", help=f"streams (default the drift suite without the control; also {FASHION})")  # fmt: skip
    p.add_argument("--contenders", nargs="+", choices=(*BASE, "grid"), default=[*BASE, "grid"], metavar="NAME",
                   help="on, off, static, grid (default all)")  # fmt: skip
    p.add_argument(
        "--samples", type=positive_int, help="samples per stream (default: bench drift's lengths; fashion-mnist 60000)"
    )
    p.add_argument("--batch", type=positive_int, default=8, help="samples per step (default 8: the backlog's micro-batches)")
    p.add_argument("--grid-neurons", nargs="+", type=positive_int, default=[64, 400, 1000], metavar="N")
    p.add_argument("--grid-iterations", nargs="+", type=positive_int, default=[1, 3, 5], metavar="K")
    p.add_argument("--grid-rewiring", nargs="+", type=_bools, default=[False, True], metavar="ON")
    p.add_argument("--grid-lr", nargs="+", type=float, default=[0.3, 1.0, 3.0], metavar="SCALE")
    p.add_argument("--jobs", type=positive_int, default=1, help="runs in parallel, one process each (default 1)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write options, settings and results as JSON")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write the markdown tables (for docs/BENCHMARKS.md)")
    p.set_defaults(run=run)
    return p


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``plasticd bench evolve`` with its parsed options."""
    opts = EvolveOptions(
        streams=tuple(args.streams), contenders=tuple(args.contenders), samples=args.samples, batch=args.batch,
        grid_neurons=tuple(args.grid_neurons), grid_iterations=tuple(args.grid_iterations),
        grid_rewiring=tuple(args.grid_rewiring), grid_lr=tuple(args.grid_lr), seed=settings.runtime.seed,
        jobs=args.jobs, json_out=args.json, markdown_out=args.markdown,
    )  # fmt: skip
    return run_evolve(settings, opts)
