"""The row-wise FP8 linear with a LoRA beside its weight added inside the GEMM (the Triton kernels of
triton_low_rank_gemm.py), for CUDA inputs on the FP8 row-wise path with Triton kernels.

torch._scaled_mm takes only a 1-D bias, so added after it the LoRA reads and writes the whole
output once more (an addmm_ of inner size rank, which cuBLAS runs at about half the memory
bandwidth): 0.110 ms on an H200 for SD3.5 Large's x-stream qkv, where the FP8 GEMM takes 0.276.
In the epilogue of a Triton GEMM it is a rank-sized dot per output tile; that GEMM is slower than
cuBLAS's (0.306 ms with the LoRA, TMA loads), so it pays where the output is at least as wide as
the input (qkv, fc1, proj; not fc2, whose input is four times its output): bench/lora_kernels.py.
A LoRA that fits in extra FP8 columns of cuBLAS's GEMM goes there instead (low_rank_columns.py): this
GEMM carries the ones too strong for them.

Registered as the custom op `sd35_fp8::fp8_gemm_low_rank` when first asked for, opaque to
torch.compile, so eager and compiled runs compute the same thing (opaque_op.py).
"""
from functools import cache
from typing import Optional

import torch
import torch.nn.functional as F

from .fp8_linear import scale_per_output
from .low_rank_columns import extended_rows, fp8_rows_matmul_rank_columns
from .opaque_op import OpaqueToCompile

_OP_NAME = "sd35_fp8::fp8_gemm_low_rank"
# tl.dot's smallest inner dimension; ranks are padded with zeros to a power of two at least this.
_MIN_RANK = 16


def fp8_gemm_low_rank_reference(x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up):
    """What the kernel computes, in fp32: (x_fp8 @ weight_fp8.T) * x_scale * weight_scale + bias +
    low @ up.T, in low's dtype."""
    out = (x_fp8.float() * x_scale) @ (weight_fp8.float() * weight_scale.reshape(-1, 1)).t()
    if bias is not None:
        out = out + bias.float()
    return (out + low.float() @ up.float().t()).to(low.dtype)


@cache
def _has_tma(device_index):
    # asked once per GPU, not on every call of the hot path
    return torch.cuda.get_device_capability(device_index) >= (9, 0)


def _gemm_impl(x_fp8: torch.Tensor, x_scale: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor,
               bias: Optional[torch.Tensor], low: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    from .triton_low_rank_gemm import fp8_gemm_low_rank_tma_triton, fp8_gemm_low_rank_triton
    # TMA (Hopper and newer) copies tiles asynchronously: 0.306 ms against 0.324 with plain loads
    # for Large's qkv on an H200; its tensors must start and have rows on 16-byte boundaries, as
    # _scaled_mm's must (a weight staged by ComfyUI could in principle sit elsewhere).
    tma = (_has_tma(x_fp8.device.index) and x_fp8.shape[1] % 16 == 0 and weight_fp8.shape[0] % 8 == 0
           and x_fp8.data_ptr() % 16 == 0 and weight_fp8.data_ptr() % 16 == 0)
    kernel = fp8_gemm_low_rank_tma_triton if tma else fp8_gemm_low_rank_triton
    return kernel(x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up)


def _gemm_shape(x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up):
    return low.new_empty((x_fp8.shape[0], weight_fp8.shape[0]))


@cache
def fp8_gemm_low_rank_op():
    """The op (x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up) -> output for CUDA tensors,
    registered on the first call; take it outside compiled code, which then calls it."""
    return OpaqueToCompile(_OP_NAME, _gemm_impl, _gemm_shape)


def pays_in_epilogue(weight_fp8: torch.Tensor) -> bool:
    """Whether a LoRA on this layer is cheaper in the Triton GEMM's epilogue than added after
    cuBLAS's GEMM: where the output pass it saves outweighs the slower GEMM, i.e. where the layer's
    output is at least as wide as its input (the ratio of the two costs depends on the inner size)."""
    return weight_fp8.shape[0] >= weight_fp8.shape[1]


def gemm_rank(rank: int) -> int:
    """The rank the kernel takes a LoRA of `rank` at (zero-padded)."""
    return max(_MIN_RANK, 1 << (rank - 1).bit_length())


def fp8_linear_rowwise_low_rank(x, weight_fp8, weight_scale, bias, low_rank, quantize, gemm, in_columns=False):
    """fp8_linear.fp8_linear_rowwise plus the LoRA `low_rank` (quant.kernels.low_rank.LowRank) in one
    GEMM; quantize: x2d -> (fp8 rows, row scales); gemm: fp8_gemm_low_rank_op() or the reference;
    in_columns: in cuBLAS's GEMM as the low-rank columns low_rank carries (low_rank_columns.py) instead."""
    x2d = x.reshape(-1, x.shape[-1])
    x_fp8, x_scale = quantize(x2d)
    up, down = low_rank.factors_in(x.dtype)
    if in_columns:
        x_ext = extended_rows(x_fp8, x_scale, x2d @ down.t(), low_rank.columns)
        out = fp8_rows_matmul_rank_columns(x_ext, x_scale, weight_fp8, weight_scale, bias, x.dtype, low_rank.columns)
    else:
        out = fp8_rows_matmul_low_rank(x_fp8, x_scale, weight_fp8, weight_scale, bias, x2d @ down.t(), up, gemm)
    return out.reshape(*x.shape[:-1], weight_fp8.shape[0])


def fp8_rows_matmul_low_rank(x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up, gemm):
    """The GEMM of fp8_linear_rowwise_low_rank on activations already quantized: x_fp8 (rows, in) with
    x_scale (rows, 1); low: the LoRA's down projection of those activations (rows, rank) in the output
    dtype; up: its up factor (out, rank). Output (rows, out)."""
    padding = gemm_rank(up.shape[1]) - up.shape[1]
    if padding:
        low, up = F.pad(low, (0, padding)), F.pad(up, (0, padding))
    out_features = weight_fp8.shape[0]
    return gemm(x_fp8, x_scale, weight_fp8, scale_per_output(weight_scale, out_features), bias, low, up)
