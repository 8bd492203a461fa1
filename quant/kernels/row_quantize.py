"""Row-wise FP8 quantization of a linear's input (one fp32 scale per row, absmax / 448) in one pass over
the rows, for the FP8 matmul on the row-wise path, eager and compiled.

Eager, torch's own ops take three passes (abs-max, divide, cast): the Triton kernel
(triton_kernels.py) keeps each row in registers and reads it once. Under torch.compile Inductor fuses
the plain-torch math of fp8_linear.quantize_rows with whatever produced the input, in one pass where
a row has at most INDUCTOR_ONE_PASS_COLS values; wider rows, SD3.5's 1536 (Medium) and 2432 (Large)
among them, it splits into a looped reduction that reads each row twice, once for the abs-max and
once to cast: the attention output's quantization before each proj took about 1.0 ms of a
compiled Medium step with CUDA graphs on an H200 and 2.0 ms of a Large one (bench/results/
speed_graphs14_033_*_gaussian.json). Those rows take the kernel under torch.compile too, registered
as the custom op `sd35_fp8::quantize_rows` when first asked for, which compiled code launches itself
(opaque_op.py). The attention output arrives as a slice of the joint sequence's tokens: the kernel
reads it in place, as Inductor did.
"""
from functools import cache
from typing import Tuple

import torch

from ..scales import FP8_DTYPE
from .fp8_linear import quantize_rows
from .opaque_op import OpaqueToCompile, compiled_code_launches_kernels

_OP_NAME = "sd35_fp8::quantize_rows"
# torch/_inductor/choices.py (should_use_persistent_reduction, torch 2.11 to 2.14): an inner reduction
# over at most 1024 values is "persistent", its row held in registers; longer ones loop.
INDUCTOR_ONE_PASS_COLS = 1024


def _impl(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    from .triton_kernels import quantize_rows_triton
    return quantize_rows_triton(x)


def _traceable(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    from .triton_kernels import quantize_rows_triton
    return quantize_rows_triton(x, wrap=torch.library.wrap_triton)


def _shape(x):
    rows = x.numel() // x.shape[-1]
    return x.new_empty((rows, x.shape[-1]), dtype=FP8_DTYPE), x.new_empty((rows, 1), dtype=torch.float32)


@cache
def quantize_rows_op():
    """The op x (..., cols) -> (fp8 values (rows, cols), scales (rows, 1)) for CUDA tensors, registered
    on the first call; take it outside compiled code, which then calls it."""
    return OpaqueToCompile(_OP_NAME, _impl, _shape, traceable=_traceable)


def kernel_takes(x: torch.Tensor) -> bool:
    """Whether x's rows are quantized by the kernel: on CUDA, eager, or compiled where compiled code
    launches the kernel itself and Inductor would read each row more than once."""
    if not x.is_cuda:
        return False
    if not torch.compiler.is_compiling():
        return True
    return compiled_code_launches_kernels() and x.shape[-1] > INDUCTOR_ONE_PASS_COLS


def activation_rows_quantizer():
    """x (..., cols) -> (fp8 values (rows, cols), fp32 scales (rows, 1)): the kernel where kernel_takes(x),
    fp8_linear.quantize_rows elsewhere (the CPU, and where Inductor's own fusion reads a row once). Take
    it outside compiled code, which then calls it: it registers the op now."""
    op = quantize_rows_op()

    def quantize(x):
        if kernel_takes(x):
            return op(x)
        return quantize_rows(x)
    return quantize
