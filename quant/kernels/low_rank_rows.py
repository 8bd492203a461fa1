"""A LoRA's down projection taken from its layer's input as FP8 rows, for layers whose input arrives
already quantized: qkv and fc1 after the block's one-pass layer norm + modulation + quantization
(norm_quantize.py), which never writes the normalized input in the compute dtype.

Without it a LoRA on those layers sent the whole block back to ComfyUI's unfused norms, modulations
and gates: eager SD3.5 Large on an H200 ran 0.1348 s/step that way against 0.1061 with the one-pass
blocks (bench/results/speed_blocks12_033_large_gaussian.json). Taken from the FP8 rows, the LoRA sees
its input with the FP8 rounding the FP8 weight's product sees; the LoRA's change to the output is a
small part of it, so that rounding is a small part of the layer's error (tests/gpu/test_norm_quantize.py).

The Triton kernel (triton_kernels.py) reads each FP8 row once; registered as the custom op
`sd35_fp8::fp8_rows_down` when first asked for, which compiled code launches itself (opaque_op.py).
"""
from functools import cache

import torch

from ..scales import FP8_DTYPE, FP8_MAX
from .opaque_op import OpaqueToCompile

_OP_NAME = "sd35_fp8::fp8_rows_down"


def fp8_rows_down(x_fp8: torch.Tensor, x_scale: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """(x_fp8 * x_scale) @ down.T in fp32 arithmetic, in down's dtype: x_fp8 (rows, cols), x_scale (rows, 1),
    down (rank, cols)."""
    return ((x_fp8.float() @ down.float().t()) * x_scale).to(down.dtype)


def _impl(x_fp8: torch.Tensor, x_scale: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    from .triton_kernels import fp8_rows_down_triton
    return fp8_rows_down_triton(x_fp8, x_scale, down)


def _traceable(x_fp8: torch.Tensor, x_scale: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    from .triton_kernels import fp8_rows_down_triton
    return fp8_rows_down_triton(x_fp8, x_scale, down, wrap=torch.library.wrap_triton)


def _shape(x_fp8, x_scale, down):
    return down.new_empty((x_fp8.shape[0], down.shape[0]))


@cache
def fp8_rows_down_op():
    """The op (x_fp8, x_scale, down) -> (rows, rank) for CUDA tensors, registered on the first call; take it
    outside compiled code, which then calls it."""
    return OpaqueToCompile(_OP_NAME, _impl, _shape, traceable=_traceable)


def fp8_rows_columns(x_fp8: torch.Tensor, down: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """x_fp8 (rows, cols) extended by a LoRA's FP8 columns (low_rank_columns.py): (x_fp8 @ down.T) @ spread,
    rounded to FP8, in fp32 arithmetic; down (rank, cols), spread (rank, columns). On CUDA the one-pass
    norm writes them into its rows' buffer (norm_quantize.layer_norm_modulate_quantize_rows_columns_op)."""
    a = x_fp8.float() @ down.float().t()
    return torch.cat([x_fp8, (a @ spread).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)], dim=1)
