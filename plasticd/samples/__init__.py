"""Untrusted sample files in, validated arrays out (or a SampleError with a reason code).

Trust model: a sample file comes from anyone who can write to the watched folder, so its
bytes are hostile until proven otherwise. Decoding therefore

* never runs code from the file: JSON is plain data, ``.pt`` goes through
  ``torch.load(weights_only=True)`` only, ``.npz`` through
  ``numpy.load(allow_pickle=False)`` after its object-dtype headers are refused;
* never follows a symlink, reads a FIFO or device, or reads a hard link (which
  could alias a checkpoint); the file is opened once and checked on its descriptor;
* checks every size that is declared (file size, zip member sizes, ``.npy``
  shapes, tensor extents, JSON nesting and integer length) *before* the work it implies;
* turns every failure into a :class:`SampleError` with a short ``reason`` code,
  so the caller quarantines the file and goes on. The caller adds the file name.

Every format ends in one validator: ``x`` becomes ``(B, D)`` float32, finite and
bounded; ``y`` becomes ``(B,)`` int64 in ``[0, num_classes)``, or -1 for unlabelled.

Modules, in the order a file meets them: ``files`` (reading it safely), ``json_format``
and ``archives`` (one decoder per format; ``tensors`` for what torch hands back),
``fields`` (the mapping's keys), ``features`` and ``labels`` (the validators),
``decode`` (the entry points), with ``limits`` and ``messages`` shared by all.
"""

from plasticd.samples.decode import SampleBatch, decode_bytes, decode_file
from plasticd.samples.files import SUPPORTED_SUFFIXES
from plasticd.samples.limits import Limits

__all__ = ["SUPPORTED_SUFFIXES", "Limits", "SampleBatch", "decode_bytes", "decode_file"]
