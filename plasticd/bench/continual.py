"""``plasticd bench continual``: does consolidation stop the daemon forgetting? Measured, side by side.

Two Fashion-MNIST streams are built in code, each of 5 tasks seen one after
another (test-then-train on every sample, as the daemon does):

    domain   the same 10 classes under 5 fixed pixel permutations (task 0: identity)
    class    class-incremental: task t holds classes 2t and 2t+1; one 10-way head

Variants (same stream, same seed, same initial network):

    plain          the engine as configured
    merges         MagMax merge (fold + θ₀ + λ·τ*) at every known task boundary
    replay         a reservoir of past samples mixed into every training step
    merges+replay  both
    merges-drift   (optional) no known boundaries: a merge when the change detector on the
                   prequential error (drift.detector) fires, and one at the end of the stream (idle)

After each task every task's test set is scored (the accuracy matrix R); from
R: average accuracy after the last task, forgetting and backward transfer
(``continual_metrics.py``), plus prequential accuracy over the whole stream.
Each (stream, variant, seed) runs in its own process; mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from plasticd.bench.common import SubParsers, mean_std, positive_int, write_results
from plasticd.config import Settings
from plasticd.threads import set_threads

if TYPE_CHECKING:
    import numpy as np

    from plasticd.data.fashion_mnist import Split

TASKS = 5
STREAMS = ("domain", "class")
VARIANTS = ("plain", "merges", "replay", "merges+replay")
OPTIONAL_VARIANTS = ("merges-drift",)
PERMUTATION_SEED = 20240601  # the domain stream's permutations are fixed, the same for every run seed


@dataclass(frozen=True)
class ContinualOptions:
    streams: tuple[str, ...] = STREAMS  # which streams to run
    variants: tuple[str, ...] = VARIANTS  # which variants to run
    seeds: tuple[int, ...] = (0, 1, 2)  # run seeds (network init, sample choice and order)
    samples_per_task: int = 4000  # training samples streamed per task
    test_per_task: int = 2000  # test samples scored per task (class stream: its 2,000 test samples)
    micro_batch: int = 1  # samples per engine step (1: the daemon with no backlog)
    replay_size: int = 1000  # reservoir size of the replay variants
    lam: float | None = 0.7  # λ of the merge variants, picked on seed 99 (None: merge.lam from the settings)
    jobs: int = 2  # processes running in parallel
    json_out: Path | None = None


@dataclass
class RunResult:
    stream: str
    variant: str
    seed: int
    matrix: list[list[float]]  # R[i][j]: accuracy on task j after task i
    average_accuracy: float
    forgetting: float
    backward_transfer: float
    prequential_accuracy: float
    merges: int
    seconds: float
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    train_x: np.ndarray  # (n, D) float32
    train_y: np.ndarray  # (n,) int64
    test_x: np.ndarray
    test_y: np.ndarray


def build_tasks(stream: str, train: Split, test: Split, opts: ContinualOptions, seed: int) -> list[Task]:
    """The 5 tasks of ``stream``: training samples drawn with ``seed``, test sets fixed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(PERMUTATION_SEED)
    domain_test = fixed.permutation(len(test))[: opts.test_per_task]  # the same images under each permutation
    tasks = []
    for t in range(TASKS):
        if stream == "class":
            tr = np.flatnonzero(np.isin(train.y, (2 * t, 2 * t + 1)))
            te = np.flatnonzero(np.isin(test.y, (2 * t, 2 * t + 1)))[: opts.test_per_task]
            perm = None
        elif stream == "domain":
            tr = np.arange(len(train))
            te = domain_test
            perm = None if t == 0 else fixed.permutation(train.x.shape[1])
        else:
            raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
        tr = rng.choice(tr, size=min(opts.samples_per_task, len(tr)), replace=False)  # random order too
        tx, ex = train.x[tr], test.x[te]
        if perm is not None:
            tx, ex = tx[:, perm], ex[:, perm]
        tasks.append(Task(tx, train.y[tr], ex, test.y[te]))
    return tasks


def variant_settings(settings: Settings, variant: str, opts: ContinualOptions, seed: int) -> Settings:
    merge = settings.merge.model_copy(update={"enabled": "merges" in variant, "on_drift": variant == "merges-drift"})
    if opts.lam is not None:
        merge = merge.model_copy(update={"lam": opts.lam})
    replay = settings.replay.model_copy(update={"size": opts.replay_size if "replay" in variant else 0})
    runtime = settings.runtime.model_copy(update={"seed": seed, "threads": 1, "device": "cpu"})
    return settings.model_copy(update={"merge": merge, "replay": replay, "runtime": runtime})


def run_one(settings: Settings, stream: str, variant: str, seed: int, opts: ContinualOptions) -> RunResult:
    """Stream the 5 tasks through one fresh engine; score every task after each."""
    import numpy as np
    import torch

    from plasticd.data.fashion_mnist import load_split
    from plasticd.learn.continual_metrics import scores
    from plasticd.learn.engine import Engine
    from plasticd.learn.reports import MergeReport

    set_threads(1)
    t0 = time.perf_counter()
    s = variant_settings(settings, variant, opts, seed)
    tasks = build_tasks(stream, load_split(s.paths.dataset, "train"), load_split(s.paths.dataset, "test"), opts, seed)
    engine = Engine.from_settings(s, device="cpu")
    tests = [(torch.from_numpy(t.test_x), torch.from_numpy(t.test_y)) for t in tasks]
    matrix, alarms = np.zeros((TASKS, TASKS)), 0
    for i, task in enumerate(tasks):
        x_all = torch.from_numpy(task.train_x)
        for a in range(0, len(task.train_y), opts.micro_batch):
            engine.step(x_all[a : a + opts.micro_batch], task.train_y[a : a + opts.micro_batch])  # merges on a drift alarm
            alarms += sum(isinstance(r, MergeReport) and r.reason == "drift" for r in engine.take_reports())
        if variant in ("merges", "merges+replay") or (variant == "merges-drift" and i == TASKS - 1):
            engine.merge("task" if variant != "merges-drift" else "idle")
        matrix[i] = [engine.evaluate(x, y) for x, y in tests]
    sc = scores(matrix)
    return RunResult(
        stream=stream, variant=variant, seed=seed, matrix=matrix.round(4).tolist(),
        average_accuracy=sc.average_accuracy, forgetting=sc.forgetting, backward_transfer=sc.backward_transfer,
        prequential_accuracy=float(engine.snapshot().accuracy or 0.0), merges=engine.consolidator.merges,
        seconds=time.perf_counter() - t0, extra={"drift_alarms": alarms},
    )  # fmt: skip


def _run_job(args: tuple) -> RunResult:
    return run_one(*args)


# --------------------------------------------------------------------- report


def format_report(results: list[RunResult], opts: ContinualOptions) -> str:
    import numpy as np

    lines = []
    for stream in opts.streams:
        rows = {v: [r for r in results if r.stream == stream and r.variant == v] for v in opts.variants}
        rows = {v: rs for v, rs in rows.items() if rs}
        if not rows:
            continue
        n = len(next(iter(rows.values())))
        head = f"{TASKS} tasks × {opts.samples_per_task} samples, {n} seeds (mean ± std, %)"
        lines += ["", f"### {stream}-incremental stream: {head}", ""]
        lines.append("| metric | " + " | ".join(f"`{v}`" for v in rows) + " |")
        lines.append("| --- |" + " ---: |" * len(rows))
        for label, attr in (
            ("average accuracy after the last task ↑", "average_accuracy"),
            ("forgetting ↓", "forgetting"),
            ("backward transfer ↑", "backward_transfer"),
            ("prequential accuracy ↑", "prequential_accuracy"),
        ):
            cells = [mean_std([getattr(r, attr) for r in rs], "{:.1f}", scale=100.0) for rs in rows.values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        base = rows.get("plain")
        if base:
            f0, p0 = np.mean([r.forgetting for r in base]), np.mean([r.prequential_accuracy for r in base])
            cut = [f"{100 * (1 - np.mean([r.forgetting for r in rs]) / f0):+.0f}%" if f0 > 0 else "-" for rs in rows.values()]
            dp = [f"{100 * (np.mean([r.prequential_accuracy for r in rs]) - p0):+.2f}" for rs in rows.values()]
            lines.append("| forgetting cut vs plain | " + " | ".join(cut) + " |")
            lines.append("| prequential Δ vs plain (points) | " + " | ".join(dp) + " |")
        secs = [f"{np.mean([r.seconds for r in rs]):.0f}" for rs in rows.values()]
        lines.append("| seconds per run | " + " | ".join(secs) + " |")
        for v, rs in rows.items():
            m = np.mean([r.matrix for r in rs], axis=0) * 100
            lines += ["", f"accuracy matrix `{v}` (row: after task i, column: task j; mean over seeds, %)", ""]
            t = m.shape[0]
            lines.append("| after \\ on | " + " | ".join(f"T{j}" for j in range(t)) + " |")
            lines.append("| --- |" + " ---: |" * t)
            lines += [f"| T{i} | " + " | ".join(f"{m[i, j]:.1f}" for j in range(t)) + " |" for i in range(t)]
    return "\n".join(lines)


def run_continual(settings: Settings, opts: ContinualOptions) -> int:
    for v in opts.variants:
        assert v in VARIANTS + OPTIONAL_VARIANTS, f"variant must be one of {VARIANTS + OPTIONAL_VARIANTS}, got {v!r}"
    jobs = [(settings, st, v, seed, opts) for st in opts.streams for v in opts.variants for seed in opts.seeds]
    lam = settings.merge.lam if opts.lam is None else opts.lam
    print(
        f"plasticd bench continual: {len(jobs)} runs ({len(opts.streams)} streams × {len(opts.variants)} variants × "
        f"{len(opts.seeds)} seeds) on {opts.jobs} processes, 1 thread each; {opts.samples_per_task} samples per task, "
        f"micro-batches of {opts.micro_batch}, N={settings.model.neurons}, λ={lam}, replay reservoir {opts.replay_size}, "
        f"replay ratio {settings.replay.ratio}",
        flush=True,
    )
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    results = []
    with ProcessPoolExecutor(max_workers=opts.jobs, mp_context=ctx) as pool:
        for future in as_completed([pool.submit(_run_job, job) for job in jobs]):
            r = future.result()
            results.append(r)
            print(
                f"  [{len(results)}/{len(jobs)}] {r.stream} {r.variant} seed {r.seed}: average accuracy "
                f"{r.average_accuracy:.4f}, forgetting {r.forgetting:.4f}, prequential {r.prequential_accuracy:.4f} "
                f"({r.seconds:.0f} s)",
                flush=True,
            )
    order = {(st, v, seed): i for i, (_, st, v, seed, _) in enumerate(jobs)}
    results.sort(key=lambda r: order[(r.stream, r.variant, r.seed)])
    print(format_report(results, opts))
    print(f"\n{len(results)} runs in {time.perf_counter() - t0:.0f} s")
    if opts.json_out is not None:
        write_results(opts.json_out, [asdict(r) for r in results])
    return 0


# ---------------------------------------------------------------- command line


def register(subparsers: SubParsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "continual",
        help="does consolidation stop forgetting? 5-task streams: plain vs MagMax merges vs replay vs both",
        description="5-task domain-incremental (pixel permutations) and class-incremental (2 classes per task) "
        "Fashion-MNIST streams; plain vs MagMax merges vs replay vs both; accuracy matrix, average accuracy, "
        "forgetting, backward transfer, prequential accuracy; mean ± std over seeds. Each run in its own process.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--streams", nargs="+", choices=STREAMS, default=list(STREAMS), help="streams (default both)")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS + OPTIONAL_VARIANTS,
        default=list(VARIANTS),
        help="variants (default plain merges replay merges+replay; merges-drift: boundaries from drift alarms)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (default 0 1 2)")
    p.add_argument("--samples-per-task", type=positive_int, default=4000, help="training samples per task (default 4000)")
    p.add_argument(
        "--micro-batch", "--continual-batch", dest="micro_batch", type=positive_int, default=1,
        help="samples per engine step (default 1, the daemon with no backlog)",
    )  # fmt: skip
    p.add_argument("--replay-size", type=positive_int, default=1000, help="reservoir size of the replay variants (default 1000)")
    p.add_argument(
        "--lam", type=float, default=0.7,
        help="λ of the merge variants (default 0.7: picked on seed 99 of the domain stream from 0.3 0.5 0.7 1.0)",
    )  # fmt: skip
    p.add_argument("--jobs", type=positive_int, default=2, help="runs in parallel, one process each (default 2)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=run)
    return p


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``plasticd bench continual`` with its parsed options."""
    opts = ContinualOptions(
        streams=tuple(args.streams),
        variants=tuple(args.variants),
        seeds=tuple(args.seeds),
        samples_per_task=args.samples_per_task,
        micro_batch=args.micro_batch,
        replay_size=args.replay_size,
        lam=args.lam,
        jobs=args.jobs,
        json_out=args.json,
    )
    return run_continual(settings, opts)
