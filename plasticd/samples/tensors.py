"""A torch tensor from a ``.pt`` file as a NumPy array, its nominal size bounded before it is touched."""

from __future__ import annotations

import numpy as np
import torch

from plasticd.errors import SampleError
from plasticd.samples.limits import Limits


def tensor_to_array(tensor: torch.Tensor, limits: Limits) -> np.ndarray:
    """A NumPy view of a dense CPU tensor; its nominal size is bounded first (strides may repeat one element)."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise SampleError("wrong_dtype", f"expected a dense tensor, found layout {tensor.layout}, dtype {tensor.dtype}")
    nominal = tensor.numel() * tensor.element_size()
    if nominal > limits.max_uncompressed_bytes:
        budget = limits.max_uncompressed_bytes
        raise SampleError("too_large", f"expected tensors of {budget} bytes at most, found one of {nominal}")
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16
        tensor = tensor.float()
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as exc:
        raise SampleError("wrong_dtype", f"expected a numeric tensor, found dtype {tensor.dtype}") from exc
