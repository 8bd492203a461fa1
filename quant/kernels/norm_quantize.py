"""The adaLN block's layer norm and modulation, `modulate(norm(x), shift, scale)` in ComfyUI's MMDiT,
and the row-wise FP8 quantization of the result for the FP8 matmul of the linear it feeds (qkv,
fc1), in one pass over the tokens.

Apart, in an eager SD3.5 Large step on an H200 the layer norms took 2.9 ms, the modulations
(addcmul) 5.2 ms and the quantizations of their results about 1.7 ms, each pass reading what the
one before wrote (bench/results/speed_ab10_033_large_gaussian.json). Under torch.compile Inductor
fuses the three, with the residual add before them, into a looped reduction that reads each row
three times: 3.2 ms of a compiled SD3.5 Medium step with CUDA graphs on an H200, 41-85 us a call
(bench/results/speed_graphs13_033_medium_gaussian.json). The Triton kernel (triton_kernels.py)
keeps a token's row in registers: one read, one write of FP8 values. Registered as the custom op
`sd35_fp8::layer_norm_modulate_quantize_rows` when first asked for, opaque to torch.compile, so
compiled code launches the same kernel (opaque_op.py). This module holds the reference it is
tested against.

For a layer whose LoRA rides as extra FP8 columns of its GEMM (low_rank_columns.py), the op
`sd35_fp8::layer_norm_modulate_quantize_rows_columns` leaves room for them after each row and writes them
there from the rows (the column kernel of low_rank_rows.py): a buffer of the extended rows, where the column
kernel used to copy the rows into a new one. In a profiled eager SD3.5 Large step on an H200 the column kernel
took 1.07 ms that way against 1.47 copying (76 calls; bench/results/lora_033_DynamicVRAM_profiled25*.json).
The same launch joins the weight with the LoRA's up columns, which torch.cat did in an op of its own: eager
steps under DynamicVRAM are bound by the host, where every op of a LoRA'd layer costs some 20-30 us
(bench/results/launch_cost.json).
For a layer that adds its LoRA after the GEMM (few rows: the context stream), the op
`sd35_fp8::layer_norm_modulate_quantize_rows_down` computes the LoRA's down projection of each row in the norm's
own launch, where the down kernel of low_rank_rows.py launched once more to read the rows back.
"""
from functools import cache
from typing import Tuple

import torch
import torch.nn.functional as F

from ..scales import FP8_DTYPE
from .fp8_linear import quantize_rows
from .opaque_op import OpaqueToCompile, launch_directly

_OP_NAME = "sd35_fp8::layer_norm_modulate_quantize_rows"
_COLUMNS_OP_NAME = "sd35_fp8::layer_norm_modulate_quantize_rows_columns"
_DOWN_OP_NAME = "sd35_fp8::layer_norm_modulate_quantize_rows_down"


def layer_norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """layer_norm(x) * (1 + scale) + shift in fp32; x (batch, tokens, channels), shift and scale
    (batch, channels); the layer norm without weight and bias, as SD3.5's norm1 and norm2."""
    normalized = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    return normalized * (1 + scale.float().unsqueeze(1)) + shift.float().unsqueeze(1)


def layer_norm_modulate_quantize_rows(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float):
    """(fp8 values (batch * tokens, channels), fp32 scales (batch * tokens, 1)) of layer_norm_modulate."""
    return quantize_rows(layer_norm_modulate(x, shift, scale, eps).reshape(-1, x.shape[-1]))


def _impl(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    from .triton_kernels import layer_norm_modulate_quantize_rows_triton
    return layer_norm_modulate_quantize_rows_triton(x, shift, scale, eps)


def _traceable(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    from .triton_kernels import layer_norm_modulate_quantize_rows_triton
    return layer_norm_modulate_quantize_rows_triton(x, shift, scale, eps, wrap=torch.library.wrap_triton)


def _shape(x, shift, scale, eps):
    rows = x.shape[0] * x.shape[1]
    return x.new_empty((rows, x.shape[2]), dtype=FP8_DTYPE), x.new_empty((rows, 1), dtype=torch.float32)


@cache
def layer_norm_modulate_quantize_rows_op():
    """The op (x, shift, scale, eps) -> (fp8 values, scales) for CUDA tensors, registered on the first
    call; take it outside compiled code, which then calls it."""
    return OpaqueToCompile(_OP_NAME, _impl, _shape, traceable=_traceable)


def _columns_impl(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float, down: torch.Tensor,
                  spread: torch.Tensor, weight_fp8: torch.Tensor,
                  up_fp8: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _norm_with_columns(x, shift, scale, eps, down, spread, weight_fp8, up_fp8, launch_directly)


def _columns_traceable(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float, down: torch.Tensor,
                       spread: torch.Tensor, weight_fp8: torch.Tensor,
                       up_fp8: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _norm_with_columns(x, shift, scale, eps, down, spread, weight_fp8, up_fp8, torch.library.wrap_triton)


def _norm_with_columns(x, shift, scale, eps, down, spread, weight_fp8, up_fp8, wrap):
    from .triton_kernels import fp8_rows_columns_triton, layer_norm_modulate_quantize_rows_triton
    x_ext, x_scale = layer_norm_modulate_quantize_rows_triton(x, shift, scale, eps, columns=spread.shape[1], wrap=wrap)
    joined = fp8_rows_columns_triton(x_ext, x.shape[2], down, spread, weight_fp8, up_fp8, wrap=wrap)
    return x_ext, x_scale, joined


def _columns_shape(x, shift, scale, eps, down, spread, weight_fp8, up_fp8):
    rows = x.shape[0] * x.shape[1]
    return (x.new_empty((rows, x.shape[2] + spread.shape[1]), dtype=FP8_DTYPE),
            x.new_empty((rows, 1), dtype=torch.float32),
            weight_fp8.new_empty((weight_fp8.shape[0], weight_fp8.shape[1] + spread.shape[1])))


@cache
def layer_norm_modulate_quantize_rows_columns_op():
    """The op (x, shift, scale, eps, down, spread, fp8 weight, the LoRA's FP8 up columns) -> (fp8 rows extended by
    a LoRA's columns, scales, the weight joined with the up columns) for CUDA tensors, registered on the first
    call; take it outside compiled code, which then calls it."""
    return OpaqueToCompile(_COLUMNS_OP_NAME, _columns_impl, _columns_shape, traceable=_columns_traceable)


def _down_impl(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
               down: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from .triton_kernels import layer_norm_modulate_quantize_rows_down_triton
    return layer_norm_modulate_quantize_rows_down_triton(x, shift, scale, eps, down)


def _down_traceable(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                    down: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from .triton_kernels import layer_norm_modulate_quantize_rows_down_triton
    return layer_norm_modulate_quantize_rows_down_triton(x, shift, scale, eps, down, wrap=torch.library.wrap_triton)


def _down_shape(x, shift, scale, eps, down):
    return (*_shape(x, shift, scale, eps), down.new_empty((x.shape[0] * x.shape[1], down.shape[0])))


@cache
def layer_norm_modulate_quantize_rows_down_op():
    """The op (x, shift, scale, eps, down) -> (fp8 values, scales, the LoRA's down projection of those rows
    (rows, rank) in down's dtype) for CUDA tensors, registered on the first call; take it outside compiled
    code, which then calls it."""
    return OpaqueToCompile(_DOWN_OP_NAME, _down_impl, _down_shape, traceable=_down_traceable)
