"""The decoded mapping's keys: ``x``, the label under ``y`` or ``label``, nothing else."""

from __future__ import annotations

from typing import Any

from plasticd.errors import SampleError
from plasticd.samples.messages import listing, type_name

FEATURES_KEY = "x"
LABEL_KEYS = ("y", "label")


def pick_fields(document: Any) -> tuple[Any, Any]:
    """``(x, y)`` from the decoded mapping; ``y`` may be spelled ``label``, and is None when absent."""
    if not isinstance(document, dict):
        raise SampleError("not_a_mapping", f'expected a mapping with key "x", found {type_name(document)}')
    unknown = [key for key in document if key not in (FEATURES_KEY, *LABEL_KEYS)]
    if unknown:
        raise SampleError("unexpected_key", f"expected keys x, y or label, found {listing(unknown)}")
    if FEATURES_KEY not in document:
        raise SampleError("missing_key", f'expected key "x", found only {listing(list(document)) or "no keys"}')
    if all(key in document for key in LABEL_KEYS):
        raise SampleError("ambiguous_label", 'expected the label under "y" or "label", found both')
    return document[FEATURES_KEY], next((document[key] for key in LABEL_KEYS if key in document), None)
