"""Linears on a few rows (the adaLN modulation acts on one conditioning row per image: 2 with
CFG) with FP8 weights and unquantized activations, in one Triton kernel.

Such a GEMM is bound by the weight read, not by tensor-core FLOPs, so FP8 x FP8 buys nothing
there: the kernel reads the fp8 weight once, widens it to the activation dtype in registers,
multiplies with fp32 accumulation and applies the per-channel scale and the bias in its
epilogue. Activations keep their full precision (more accurate than the FP8 matmul: the adaLN
linears are a third of the model's parameters and their output scales every activation) and
nothing the size of the weight is written (faster than dequantize-then-GEMM).

Registered as the custom op `sd35_fp8::small_m_linear` when first asked for, opaque to
torch.compile, so eager and compiled runs compute the same thing; compiled code launches it from
Inductor's own code where torch has triton_op (opaque_op.py).
"""
from functools import cache
from typing import Optional

import torch

from .fp8_linear import dequantize
from .opaque_op import OpaqueToCompile

# The kernel's one row block (quant/kernels/triton_kernels.py takes it as BLOCK_M), tl.dot's smallest. A tiled version for the 154-308 rows of
# the text context measured 0.08-0.25 ms on an H100 against 0.03-0.04 for quantize + FP8 GEMM or
# dequantize + GEMM, so those rows stay on the model's path.
SMALL_M_MAX_ROWS = 16
_KERNEL_DTYPES = (torch.float16, torch.bfloat16)
_OP_NAME = "sd35_fp8::small_m_linear"


def use_small_m_kernel(x2d: torch.Tensor) -> bool:
    return x2d.is_cuda and x2d.dtype in _KERNEL_DTYPES and x2d.shape[0] <= SMALL_M_MAX_ROWS


def small_m_linear_reference(x2d, weight_fp8, weight_scale, bias):
    out = torch.nn.functional.linear(x2d.float(), dequantize(weight_fp8, weight_scale, torch.float32),
                                     None if bias is None else bias.float())
    return out.to(x2d.dtype)


def _small_m_linear_impl(x2d: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor,
                         bias: Optional[torch.Tensor]) -> torch.Tensor:
    from .triton_kernels import small_m_linear_triton
    return small_m_linear_triton(x2d, weight_fp8, weight_scale, bias, block_rows=SMALL_M_MAX_ROWS)


def _small_m_linear_traceable(x2d: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor,
                              bias: Optional[torch.Tensor]) -> torch.Tensor:
    from .triton_kernels import small_m_linear_triton
    return small_m_linear_triton(x2d, weight_fp8, weight_scale, bias, block_rows=SMALL_M_MAX_ROWS,
                                 wrap=torch.library.wrap_triton)


def _small_m_linear_shape(x2d, weight_fp8, weight_scale, bias):
    return x2d.new_empty((x2d.shape[0], weight_fp8.shape[0]))


@cache
def small_m_linear_op():
    """The op (x2d, weight_fp8, weight_scale, bias) -> output, registered on the first call; take it
    outside compiled code, which then calls it."""
    return OpaqueToCompile(_OP_NAME, _small_m_linear_impl, _small_m_linear_shape, traceable=_small_m_linear_traceable)
