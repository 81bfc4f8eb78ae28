"""``plasticd predict FILE...|-``: ask the saved model, without training it, while the daemon runs.

The newest valid checkpoint is loaded read-only (no lock, no training, nothing
written: see ``saved``), each file is decoded with the daemon's own decoders
and limits, and every sample becomes one JSON line on stdout::

    {"file": "a.json", "index": 0, "predicted": 3, "confidence": 0.91,
     "probabilities": [0.01, 0.02, 0.05, 0.91], "checkpoint": 12, "id": "order-17"}

``id`` is there when a JSON sample carries one. A refused file prints one line
with its ``error`` (reason code and message) instead, and the exit code is 1;
``-`` reads one JSON document from stdin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from plasticd.commands import SubParsers
from plasticd.config import Settings
from plasticd.errors import SampleError

EXIT_OK, EXIT_REFUSED = 0, 1
STDIN = "-"


def register(subparsers: SubParsers) -> list[argparse.ArgumentParser]:
    p = subparsers.add_parser(
        "predict",
        help="predict sample files with the saved model (read-only: works while the daemon runs)",
        description="Load the newest valid checkpoint of paths.checkpoints read-only (no lock taken, nothing "
        "trained, nothing written), decode each FILE as the daemon would (same formats and limits; '-' reads one "
        "JSON document from stdin) and print one JSON line per sample: file, index, predicted class, confidence, "
        'class probabilities, the checkpoint used, and the sample\'s "id" when a JSON file gives one. '
        "A refused file prints a line with its error instead. Exit codes: 0 all predicted, 1 a file was refused "
        "(or no checkpoint), 2 usage.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="sample files (.json, .pt, .pth, .npz), or - for stdin")
    p.add_argument("--checkpoint", type=int, metavar="SEQ", help="use checkpoint SEQ instead of the newest")
    p.set_defaults(run=run)
    return [p]


def run(settings: Settings, args: argparse.Namespace) -> int:
    from plasticd.service import answers
    from plasticd.tools import setup
    from plasticd.tools.saved import engine_from, load_checkpoint, store_for_reading

    setup(settings)
    loaded = load_checkpoint(store_for_reading(settings), args.checkpoint)
    engine = engine_from(settings, loaded)
    status = EXIT_OK
    for name in args.files:
        try:
            x, sample_id = _decode(name, settings)
        except SampleError as exc:
            status = EXIT_REFUSED
            _emit(answers.refusal(name, exc))
            print(f"plasticd predict: {name} refused ({exc.reason}): {exc}", file=sys.stderr)
            continue
        import torch

        for record in answers.records(name, engine.predict_logits(torch.from_numpy(x)), loaded.info.seq, sample_id):
            _emit(record)
    return status


def _decode(name: str, settings: Settings) -> tuple[np.ndarray, str | None]:
    """(x (B, D) float32, the JSON sample's "id" or None) from a file or stdin; SampleError as the daemon raises it."""
    from plasticd.samples import Limits
    from plasticd.samples.files import read_regular_file, supported_suffix
    from plasticd.service.answers import decode_document

    limits = Limits(**settings.limits.model_dump())
    m = settings.model
    if name == STDIN:
        data, suffix = sys.stdin.buffer.read(limits.max_file_bytes + 1), ".json"  # one byte over the cap is refused
    else:
        path = Path(name)
        suffix = supported_suffix(path.suffix)  # before reading, as the daemon's decode_file does
        data = read_regular_file(path, limits.max_file_bytes)
    return decode_document(data, suffix, m.input_dim, m.num_classes, limits)


def _emit(record: dict[str, Any]) -> None:
    from plasticd.service.answers import line

    sys.stdout.write(line(record))
    sys.stdout.flush()
