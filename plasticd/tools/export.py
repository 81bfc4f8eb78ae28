"""``plasticd export OUT``: the model as one self-contained file that runs without the daemon.

OUT is a safetensors file with the weights of the copy the daemon predicts with
(``Engine.choice.chosen()``: the weight average unless the live weights were
lately more accurate), the connection mask and the input standardisation, and
a JSON header in the safetensors metadata (architecture, format version,
normalisation, source checkpoint). ``loader.py`` in this package reads it with
NumPy alone; its docstring is the format's specification.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from plasticd.commands import SubParsers
from plasticd.config import Settings
from plasticd.errors import PlasticdError, UsageError

if TYPE_CHECKING:
    from plasticd.learn.engine import Engine


def register(subparsers: SubParsers) -> list[argparse.ArgumentParser]:
    p = subparsers.add_parser(
        "export",
        help="write the model as a self-contained safetensors file, runnable without the daemon",
        description="Write OUT: a safetensors file with the predicting copy's weights (w_in, b_in, w, w_out, b_out), "
        "the connection mask and the input normalisation (norm.mean, norm.var), and a JSON header in its metadata "
        "(architecture, format version, normalisation, source checkpoint). The newest valid checkpoint is read "
        "read-only (safe while the daemon runs). plasticd/tools/loader.py runs the file with NumPy and safetensors "
        "only: load(OUT).predict_proba(x).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, metavar="OUT", help="the model file to write (e.g. model.safetensors)")
    p.add_argument("--checkpoint", type=int, metavar="SEQ", help="export checkpoint SEQ instead of the newest")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=run)
    return [p]


def run(settings: Settings, args: argparse.Namespace) -> int:
    from plasticd.tools import setup
    from plasticd.tools.saved import engine_from, load_checkpoint, store_for_reading

    setup(settings)
    out: Path = args.out
    check_destination(out, args.force)
    loaded = load_checkpoint(store_for_reading(settings), args.checkpoint)
    engine = engine_from(settings, loaded, device="cpu")
    header = export(engine, out, source={"checkpoint": loaded.info.seq, "created": loaded.info.created})
    a = header["architecture"]
    print(
        f"exported checkpoint {loaded.info.seq} ({header['source']['copy']} weights, {a['neurons']} neurons, "
        f"{a['input_dim']} inputs, {a['classes']} classes) to {out}; load it with plasticd/tools/loader.py"
    )
    return 0


def check_destination(out: Path, force: bool) -> None:
    """UsageError (exit 2) when ``out`` cannot be the model file: its folder missing (never created here), a
    folder in its place; PlasticdError (exit 1) for an existing file without ``--force`` or a folder plasticd may
    not write."""
    parent = out.absolute().parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise UsageError(f"export: {parent} {what}; create the folder first (export never creates folders)")
    if out.is_dir():
        raise UsageError(f"export: {out} is a folder; name the model file to write, e.g. {out / 'model.safetensors'}")
    if out.exists() and not force:
        raise PlasticdError(f"export: {out} exists; pass --force to replace it")
    if not os.access(parent, os.W_OK):
        raise PlasticdError(f"export: cannot write into {parent}: permission denied")


def export(engine: Engine, out: Path, source: dict) -> dict:
    """Write ``engine``'s predicting copy to ``out`` atomically (temp file, fsync, rename); returns the header."""
    from safetensors.torch import save

    from plasticd.tools import loader

    model = engine.predicting()
    tensors = dict(model.theta, mask=model.mask)
    if model.norm_mean is not None and model.norm_var is not None:
        tensors["norm.mean"] = model.norm_mean
        tensors["norm.var"] = model.norm_var
    header = {
        "format": loader.FORMAT,
        "version": loader.VERSION,
        "architecture": {
            "input_dim": model.input_dim,
            "classes": model.output_dim,
            "neurons": model.neurons,
            "iterations": model.iterations,
            "activation": model.activation,
        },
        "normalization": {"kind": "standardize", "eps": model.norm_eps} if model.norm_mean is not None else {"kind": "none"},
        "source": {**source, "samples_seen": model.samples_seen, "copy": model.copy},
    }
    payload = save(tensors, metadata={loader.HEADER_KEY: json.dumps(header)})
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except OSError as exc:  # the reason in words, the path once (not the errno text with the temp name)
        reason = (exc.strerror or type(exc).__name__).lower()
        raise PlasticdError(f"export: cannot write {out}: {reason}; nothing was written") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return header
