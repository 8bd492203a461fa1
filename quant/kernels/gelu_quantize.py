"""The tanh GELU between an MLP's fc1 and fc2 and the row-wise FP8 quantization of its output for
fc2's FP8 matmul, in one pass over the hidden activations.

Apart, torch's GELU writes the activations and the quantization reads them back; under
torch.compile Inductor fuses the two but splits rows this long (6144-9728 values in SD3.5) into a
two-pass looped reduction, one pass for the abs-max and one to cast: measured 10.45 ms of a SD3.5
Large step on an H200, about 0.9 TB/s. The Triton kernel (triton_kernels.py) keeps a row in
registers and reads it once. Registered as the custom op `sd35_fp8::gelu_quantize_rows` when first
asked for, opaque to torch.compile, so Inductor leaves it one kernel (opaque_op.py; eager calls the
kernel directly; compiled code launches it from Inductor's own code where torch has triton_op); CPU
tensors take the reference.
"""
from functools import cache
from typing import Tuple

import torch
import torch.nn.functional as F

from ..scales import FP8_DTYPE
from .fp8_linear import quantize_rows
from .opaque_op import OpaqueToCompile

# The activation a layer applies to its own input (nodes/ops.py FP8Linear.input_activation).
GELU_TANH = "gelu_tanh"
_OP_NAME = "sd35_fp8::gelu_quantize_rows"


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def gelu_quantize_rows(x: torch.Tensor):
    """(fp8 values (rows, cols), fp32 scales (rows, 1)) of gelu_tanh(x) computed in fp32, x (..., cols):
    the reference of the kernel and the CPU path."""
    return quantize_rows(gelu_tanh(x.float()))


def _gelu_quantize_rows_impl(x2d: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    from .triton_kernels import gelu_quantize_rows_triton
    return gelu_quantize_rows_triton(x2d)


def _gelu_quantize_rows_traceable(x2d: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    from .triton_kernels import gelu_quantize_rows_triton
    return gelu_quantize_rows_triton(x2d, wrap=torch.library.wrap_triton)


def _gelu_quantize_rows_shape(x2d):
    return x2d.new_empty(x2d.shape, dtype=FP8_DTYPE), x2d.new_empty((x2d.shape[0], 1), dtype=torch.float32)


@cache
def gelu_quantize_rows_op():
    """The op x2d -> (fp8 values, scales) for CUDA tensors, registered on the first call; take it
    outside compiled code, which then calls it."""
    return OpaqueToCompile(_OP_NAME, _gelu_quantize_rows_impl, _gelu_quantize_rows_shape,
                           traceable=_gelu_quantize_rows_traceable)
