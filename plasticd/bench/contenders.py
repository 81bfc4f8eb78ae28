"""The learners of ``plasticd bench drift``: each runs one stream prequentially (predict, then learn).

    plasticd-ingest  the product as a user runs it: every sample written as one JSON
                     file, the whole stream a backlog, drained by ``plasticd ingest``
                     in a subprocess (real pipeline: claims, micro-batches of up to
                     train.max_batch, checkpoints); correctness read back from
                     state/predictions.jsonl
    plasticd-b1      the same settings, the Engine in-process, one sample per step
    arf              river forest.ARFClassifier, defaults
    hat              river tree.HoeffdingAdaptiveTreeClassifier, defaults
    logreg           river StandardScaler | LogisticRegression (SoftmaxRegression
                     for more than 2 classes)
    mlp-400          torch: one hidden layer of 400 ReLU, Adam lr 1e-3, one sample
                     per step, inputs standardised online (plasticd's InputNorm)

Each returns a per-sample "was the prediction right" vector and the seconds it
spent learning, so every metric is computed the same way for all of them. The
in-process learners use one torch thread; so does the ingest subprocess
(runtime.threads = 1), on the CPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from plasticd.config import Settings
from plasticd.config_text import describe_settings
from plasticd.threads import set_threads

if TYPE_CHECKING:  # numpy and torch are imported where a run starts: the CLI imports this module for its names
    import numpy as np

    from plasticd.bench.streams import Stream

CONTENDERS = ("plasticd-ingest", "plasticd-b1", "arf", "hat", "logreg", "mlp-400")
PLASTICD = ("plasticd-ingest", "plasticd-b1")
PEERS = ("arf", "hat", "logreg", "mlp-400")


@dataclass
class Run:
    correct: np.ndarray  # (n,) bool: predicted before learning == label
    seconds: float  # time spent predicting and learning (ingest: the pipeline's own clock when it reports one)
    extra: dict = field(default_factory=dict)


def stream_settings(settings: Settings, stream: Stream, seed: int) -> Settings:
    """The user's settings, sized for ``stream``, on the CPU with one thread."""
    model = settings.model.model_copy(update={"input_dim": stream.dim, "num_classes": stream.num_classes})
    runtime = settings.runtime.model_copy(update={"seed": seed, "threads": 1, "device": "cpu"})
    return settings.model_copy(update={"model": model, "runtime": runtime})


def run_contender(name: str, stream: Stream, settings: Settings, seed: int) -> Run:
    """Stream ``stream`` through contender ``name``, prequentially."""

    set_threads(1)
    if name == "plasticd-ingest":
        return _ingest(stream, stream_settings(settings, stream, seed))
    if name == "plasticd-b1":
        return _per_sample(stream, stream_settings(settings, stream, seed))
    if name == "mlp-400":
        return _mlp(stream, seed)
    if name in ("arf", "hat", "logreg"):
        return _river(name, stream, seed)
    raise ValueError(f"unknown contender {name!r}; contenders: {', '.join(CONTENDERS)}")


def _per_sample(stream: Stream, settings: Settings) -> Run:
    import numpy as np
    import torch

    from plasticd.errors import NonFiniteError
    from plasticd.learn.engine import Engine

    engine = Engine.from_settings(settings, device="cpu")
    x, y = torch.from_numpy(stream.x), stream.y
    correct = np.zeros(stream.n, dtype=bool)
    refused = 0
    t0 = time.perf_counter()
    for i in range(stream.n):
        try:
            correct[i] = engine.step(x[i : i + 1], y[i : i + 1]).predicted[0] == y[i]
        except NonFiniteError:
            refused += 1  # the engine changed nothing; the sample counts as a miss
    return Run(correct, time.perf_counter() - t0, {"refused": refused})


def _river_model(name: str, num_classes: int, seed: int):
    from river import forest, linear_model, preprocessing, tree

    if name == "arf":
        return forest.ARFClassifier(seed=seed)
    if name == "hat":
        return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    head = linear_model.LogisticRegression() if num_classes == 2 else linear_model.SoftmaxRegression()
    return preprocessing.StandardScaler() | head


def _river(name: str, stream: Stream, seed: int) -> Run:
    import numpy as np

    model = _river_model(name, stream.num_classes, seed)
    rows = [dict(enumerate(r)) for r in stream.x.tolist()]
    labels = stream.y.tolist()
    correct = np.zeros(stream.n, dtype=bool)
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(zip(rows, labels, strict=True)):
        p = model.predict_one(x)  # None before the first label: a miss
        correct[i] = p is not None and int(p) == y
        model.learn_one(x, y)
    return Run(correct, time.perf_counter() - t0)


def _mlp(stream: Stream, seed: int) -> Run:
    import numpy as np
    import torch

    from plasticd.model.normalize import InputNorm

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(stream.dim, 400), torch.nn.ReLU(), torch.nn.Linear(400, stream.num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    norm = InputNorm(stream.dim)
    x, y = torch.from_numpy(stream.x), torch.from_numpy(stream.y)
    correct = np.zeros(stream.n, dtype=bool)
    t0 = time.perf_counter()
    for i in range(stream.n):
        xi = x[i : i + 1]
        norm.update(xi)
        logits = net(norm(xi))
        correct[i] = int(logits.argmax(1)) == int(y[i])
        loss = torch.nn.functional.cross_entropy(logits, y[i : i + 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return Run(correct, time.perf_counter() - t0)


# ------------------------------------------------------------------------ ingest


def write_backlog(stream: Stream, folder: Path) -> None:
    """One JSON file per sample, named and time-stamped in stream order (the ingest source takes
    files oldest first, by (mtime, name))."""
    folder.mkdir(parents=True)
    base = time.time_ns() - 10**9 * 3600  # an hour ago, so nothing is "still being written"
    for i, (row, label) in enumerate(zip(stream.x.tolist(), stream.y.tolist(), strict=True)):
        path = folder / f"{i:07d}.json"
        path.write_text(json.dumps({"x": row, "y": label}, separators=(",", ":")))
        os.utime(path, ns=(base + i * 1000, base + i * 1000))


def _ingest(stream: Stream, settings: Settings) -> Run:
    with tempfile.TemporaryDirectory(prefix="plasticd-drift-") as tmp:
        root = Path(tmp)
        paths = settings.paths.model_copy(
            update={name: root / name for name in ("inbox", "processed", "failed", "work", "checkpoints", "state")}
        )
        s = settings.model_copy(update={"paths": paths})
        config = root / "plasticd.toml"
        config.write_text(describe_settings(s))
        backlog = root / "backlog"
        write_backlog(stream, backlog)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLASTICD_")}  # the TOML says it all
        cmd = [sys.executable, "-m", "plasticd", "ingest", str(backlog), "--to", str(root / "done"), "--config", str(config)]
        t0 = time.perf_counter()
        done = subprocess.run(
            [*cmd, "--no-progress", "--allow-failures", "--log-level", "warning"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"plasticd ingest failed ({done.returncode}) on {stream.name}: {done.stderr[-2000:]}")
        correct, extra = read_predictions(paths.state, stream)
        extra["refused"] = sum(1 for p in paths.failed.glob("*.json") if not p.name.endswith(".error.json"))
        rate = re.search(r"([\d.]+) files/s", done.stdout)
        extra["wall_seconds"] = round(wall, 2)
        seconds = stream.n / float(rate.group(1)) if rate and float(rate.group(1)) > 0 else wall
        return Run(correct, seconds, extra)


def read_predictions(state: Path, stream: Stream) -> tuple[np.ndarray, dict]:
    """Per-sample correctness from the predictions journal (and its rotations), by file name.

    Also checks that the pipeline took the stream in order: ``seq`` must rise with the sample index.
    A sample with no record (its file was refused) counts as a miss.
    """
    import numpy as np

    records = []
    for path in sorted(state.glob("predictions.jsonl*"), reverse=True):
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    correct = np.zeros(stream.n, dtype=bool)
    seen = np.zeros(stream.n, dtype=bool)
    order = []
    for r in records:
        i = int(Path(r["file"]).stem)
        correct[i] = bool(r["correct"])
        seen[i] = True
        order.append((r["seq"], i))
    order.sort()
    indices = np.array([i for _, i in order])
    in_order = bool(np.all(np.diff(indices) > 0)) if len(indices) > 1 else True
    return correct, {"predicted": int(seen.sum()), "in_stream_order": in_order, "duplicates": len(records) - int(seen.sum())}
