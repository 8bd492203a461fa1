"""One dispatch point for a quantized linear: which kernels compute (input, fp8 weight, scale, bias)
for a compute path, on this device and in this mode (eager or under torch.compile)."""
from functools import partial

import torch

from .compute_path import FP8_ROWWISE, FP8_TENSORWISE, ComputePath
from .fp8_linear import (dequantize, fp8_linear_rowwise, fp8_linear_tensorwise, fp8_rows_matmul, quantize_rows,
                         weight_only_linear)
from .gelu_quantize import GELU_TANH, gelu_quantize_rows, gelu_quantize_rows_op, gelu_tanh
from .low_rank_gemm import (fp8_gemm_low_rank_op, fp8_linear_rowwise_low_rank, fp8_rows_matmul_low_rank,
                            pays_in_epilogue)
from .low_rank_columns import adds_after_gemm
from .low_rank_rows import fp8_rows_down_op
from .norm_quantize import (layer_norm_modulate_quantize_rows, layer_norm_modulate_quantize_rows_columns_op,
                            layer_norm_modulate_quantize_rows_down_op, layer_norm_modulate_quantize_rows_op)
from .row_quantize import activation_rows_quantizer
from .small_m_linear import small_m_linear_op, use_small_m_kernel


def _eager_cuda_or(triton_fn, torch_fn):
    """triton_fn on eager CUDA tensors; torch_fn elsewhere and under torch.compile, where Inductor
    fuses the plain-torch math into neighbouring kernels."""
    def dispatch(tensor, *args):
        if tensor.is_cuda and not torch.compiler.is_compiling():
            return triton_fn(tensor, *args)
        return torch_fn(tensor, *args)
    return dispatch


def _low_rank_added(linear, activation=None, in_gemm=None):
    """activation: what the layer applies to its input before the matmul, so the LoRA sees it too;
    in_gemm: the linear with the LoRA inside its GEMM (low_rank_gemm.py), taken for CUDA inputs
    where it pays."""
    def with_low_rank(x, weight_fp8, weight_scale, bias, low_rank=None):
        if (low_rank is not None and in_gemm is not None and x.is_cuda
                and not adds_after_gemm(x.numel() // x.shape[-1], x.shape[-1])):
            if low_rank.columns is not None:
                return in_gemm(x, weight_fp8, weight_scale, bias, low_rank, in_columns=True)
            if pays_in_epilogue(weight_fp8):
                return in_gemm(x, weight_fp8, weight_scale, bias, low_rank)
        out = linear(x, weight_fp8, weight_scale, bias)
        if low_rank is None:
            return out
        return low_rank.add_to(out, x if activation is None else activation(x))
    return with_low_rank


def linear_for(compute_path: ComputePath, input_activation=None):
    """The model's linear: (input, fp8 weight, scale, bias, low_rank=None) -> output in the input's
    dtype; low_rank: a LoRA kept beside the weight (quant.kernels.low_rank.LowRank).
    input_activation: None, or GELU_TANH for a layer that applies tanh GELU to its input itself
    (an MLP's fc2), fused into the activation quantization on the row-wise FP8 path."""
    linear = _linear_for(compute_path)
    if input_activation is None:
        return linear
    if input_activation != GELU_TANH:
        raise ValueError(f"input_activation must be None or {GELU_TANH!r}, not {input_activation!r}")
    if compute_path.name != FP8_ROWWISE:
        return lambda x, weight_fp8, weight_scale, bias, low_rank=None: linear(
            gelu_tanh(x), weight_fp8, weight_scale, bias, low_rank)

    fused_op = gelu_quantize_rows_op() if compute_path.fp8_rows_kernels else None

    def gelu_quantize(x):
        if fused_op is not None and x.is_cuda:
            return fused_op(x.reshape(-1, x.shape[-1]))
        return gelu_quantize_rows(x)
    fused = _low_rank_added(partial(fp8_linear_rowwise, quantize=gelu_quantize), activation=gelu_tanh)

    def gelu_linear(x, weight_fp8, weight_scale, bias, low_rank=None):
        if compute_path.triton_kernels and _few_rows(x):
            return linear(gelu_tanh(x), weight_fp8, weight_scale, bias, low_rank)
        return fused(x, weight_fp8, weight_scale, bias, low_rank)
    return gelu_linear


def _few_rows(x):
    return use_small_m_kernel(x.reshape(-1, x.shape[-1]))


def _linear_for(compute_path: ComputePath):
    quantize_activations, dequantize_weights = quantize_rows, dequantize
    if compute_path.triton_kernels:
        from .triton_kernels import dequantize_triton
        quantize_activations = activation_rows_quantizer()
        dequantize_weights = _eager_cuda_or(dequantize_triton, dequantize)
    if compute_path.name == FP8_ROWWISE:
        in_gemm = (partial(fp8_linear_rowwise_low_rank, quantize=quantize_activations, gemm=fp8_gemm_low_rank_op())
                   if compute_path.triton_kernels else None)
        many_rows = _low_rank_added(partial(fp8_linear_rowwise, quantize=quantize_activations), in_gemm=in_gemm)
    elif compute_path.name == FP8_TENSORWISE:
        many_rows = _low_rank_added(fp8_linear_tensorwise)
    else:
        many_rows = partial(weight_only_linear, dequantize=dequantize_weights)
    if not compute_path.triton_kernels:
        return many_rows

    fused_small_m = small_m_linear_op()

    @_low_rank_added
    def small_m_linear(x, weight_fp8, weight_scale, bias):
        x2d = x.reshape(-1, x.shape[-1])
        return fused_small_m(x2d, weight_fp8, weight_scale, bias).reshape(*x.shape[:-1], weight_fp8.shape[0])

    def linear(x, weight_fp8, weight_scale, bias, low_rank=None):
        if _few_rows(x):
            return small_m_linear(x, weight_fp8, weight_scale, bias, low_rank)
        return many_rows(x, weight_fp8, weight_scale, bias, low_rank)
    return linear


def norm_rows_linear_for(compute_path: ComputePath):
    """The model's linear on modulate(layer_norm(x), shift, scale), normalized, modulated and quantized to
    FP8 rows in one pass (norm_quantize.py), on the row-wise FP8 path with Triton kernels (CUDA; CPU tensors,
    in tests, take the reference norm): (x (batch, tokens, in), shift and scale (batch, in), eps, fp8
    weight, scale, bias, low_rank=None) -> output (rows, out) in x's dtype. low_rank as for linear_for,
    taken from the FP8 rows: as extra columns of the GEMM that the norm leaves room for, or its down
    projection of them (low_rank_rows.py) in the epilogue GEMM or added after, that one made in the norm's
    launch where the rows are few."""
    if not compute_path.fp8_rows_kernels:
        raise ValueError(f"FP8 rows need the row-wise FP8 path with Triton kernels, not {compute_path}")
    norm, norm_with_columns = layer_norm_modulate_quantize_rows_op(), layer_norm_modulate_quantize_rows_columns_op()
    norm_with_down = layer_norm_modulate_quantize_rows_down_op()
    down_projection = fp8_rows_down_op()
    in_gemm = partial(fp8_rows_matmul_low_rank, gemm=fp8_gemm_low_rank_op())

    def norm_rows_linear(x, shift, scale, eps, weight_fp8, weight_scale, bias, low_rank=None):
        after = low_rank is not None and adds_after_gemm(x.shape[0] * x.shape[1], x.shape[2])
        if low_rank is not None and low_rank.columns is not None and not after:
            x_ext, x_scale, joined = norm_with_columns(x, shift, scale, eps, low_rank.factors_in(x.dtype)[1],
                                                       low_rank.columns.spread, weight_fp8, low_rank.columns.up_fp8)
            return fp8_rows_matmul(x_ext, x_scale, joined, weight_scale, bias, x.dtype)
        if after and x.is_cuda:
            up, down = low_rank.factors_in(x.dtype)
            x_fp8, x_scale, low = norm_with_down(x, shift, scale, eps, down)
            return fp8_rows_matmul(x_fp8, x_scale, weight_fp8, weight_scale, bias, x.dtype).addmm_(low, up.t())
        x_fp8, x_scale = (norm if x.is_cuda else layer_norm_modulate_quantize_rows)(x, shift, scale, eps)
        if low_rank is None:
            return fp8_rows_matmul(x_fp8, x_scale, weight_fp8, weight_scale, bias, x.dtype)
        up, down = low_rank.factors_in(x.dtype)
        low = down_projection(x_fp8, x_scale, down)
        if not after and pays_in_epilogue(weight_fp8):
            return in_gemm(x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up)
        return fp8_rows_matmul(x_fp8, x_scale, weight_fp8, weight_scale, bias, x.dtype).addmm_(low, up.t())
    return norm_rows_linear
