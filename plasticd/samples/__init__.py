"""Untrusted sample files in, validated arrays out (or a SampleError with a reason code)."""

from plasticd.samples.decode import SUPPORTED_SUFFIXES, Limits, SampleBatch, decode_bytes, decode_file

__all__ = ["SUPPORTED_SUFFIXES", "Limits", "SampleBatch", "decode_bytes", "decode_file"]
