"""Every reason code a refused sample file can carry (``SampleError.reason``), for whoever lists them ahead of time.

The metrics exporter exports one zero series per code from the start, so an
alert on a rate of quarantines sees the series before the first refusal.
``tests/test_live_metrics.py`` reads the decoders' source and checks this list
names every code they raise.
"""

from __future__ import annotations

SAMPLE_REASONS = (
    "ambiguous_label",
    "bad_archive",
    "decompression_bomb",
    "duplicate_key",
    "empty",
    "hardlink",
    "json_too_deep",
    "label_count_mismatch",
    "label_not_integer",
    "label_out_of_range",
    "malformed_json",
    "missing_key",
    "non_finite",
    "not_a_mapping",
    "not_a_regular_file",
    "object_array",
    "too_large",
    "too_many_samples",
    "truncated",
    "unexpected_key",
    "unreadable",
    "unsafe_pickle",
    "unsupported_extension",
    "value_out_of_range",
    "wrong_dtype",
    "wrong_length",
    "wrong_rank",
)
