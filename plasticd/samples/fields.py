"""The decoded mapping's keys: ``x``, the label under ``y`` or ``label``, the producer's ``id``, nothing else.

The ``id`` is the producer's own name for its samples, echoed in each prediction record
(``sample_id``) so a producer finds *its* answer: one string for the whole file (every
sample of a batch carries it) or, for a batch, a list of one string per sample. It is
never interpreted. Because ids are copied into the journal, the ids of one file may total at most
``MAX_ID_CHARS`` characters as echoed (a file's single id counts once per sample).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plasticd.errors import SampleError
from plasticd.samples.messages import kinds, listing, type_name

FEATURES_KEY = "x"
LABEL_KEYS = ("y", "label")
ID_KEY = "id"
MAX_ID_CHARS = 1 << 20  # the ids of one file as echoed in its records, in characters: bounds the journal's growth


def pick_fields(document: Any) -> tuple[Any, Any, Any]:
    """``(x, y, id)`` from the decoded mapping; ``y`` may be spelled ``label``; ``y`` and ``id`` are None when absent.

    The id's kind (a string, or a list of strings) is checked here, first, as the JSON decoder always did;
    its count against the samples in ``validated_ids``.
    """
    if not isinstance(document, dict):
        raise SampleError("not_a_mapping", f'expected a mapping with key "x", found {type_name(document)}')
    sample_id = _id_value(document.get(ID_KEY))
    unknown = [key for key in document if key not in (FEATURES_KEY, *LABEL_KEYS, ID_KEY)]
    if unknown:
        raise SampleError("unexpected_key", f"expected keys x, y or label (and id), found {listing(unknown)}")
    if FEATURES_KEY not in document:
        raise SampleError("missing_key", f'expected key "x", found only {listing(list(document)) or "no keys"}')
    if all(key in document for key in LABEL_KEYS):
        raise SampleError("ambiguous_label", 'expected the label under "y" or "label", found both')
    return document[FEATURES_KEY], next((document[key] for key in LABEL_KEYS if key in document), None), sample_id


def validated_ids(value: str | list[str] | None, count: int) -> tuple[str, ...] | None:
    """One id per sample (a file's single id repeated), or None when the file gave none."""
    if value is None:
        return None
    echoed = len(value) * count if isinstance(value, str) else sum(map(len, value))
    if echoed > MAX_ID_CHARS:
        raise SampleError(
            "too_large",
            f"expected the ids of one file to total at most {MAX_ID_CHARS} characters as echoed in its {count} "
            f"prediction records (one id for the file counts once per sample), found {echoed}",
        )
    if isinstance(value, str):
        return (value,) * count
    if len(value) != count:
        raise SampleError(
            "wrong_length", f'expected "id" to be one string or {count} strings (one per sample), found {len(value)}'
        )
    return tuple(value)


def _id_value(value: Any) -> str | list[str] | None:
    """The ``id`` as a string or a list of strings (a NumPy string array from an ``.npz`` included)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.ndim <= 1:
        value = value.tolist()
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        foreign = set(map(type, value)) - {str}
        if foreign:
            found = f"a list with {kinds(foreign)}"
            raise SampleError("wrong_dtype", f'expected "id" to be a string or a list of strings, found {found}')
        return list(value)
    raise SampleError("wrong_dtype", f'expected "id" to be a string or a list of strings, found {type_name(value)}')
