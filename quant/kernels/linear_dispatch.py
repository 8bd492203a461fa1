"""One dispatch point for a quantized linear: which kernels compute (input, fp8 weight, scale, bias)
for a compute path, on this device and in this mode (eager or under torch.compile)."""
from functools import partial

import torch

from .compute_path import FP8_ROWWISE, FP8_TENSORWISE, ComputePath
from .fp8_linear import dequantize, fp8_linear_rowwise, fp8_linear_tensorwise, quantize_rows, weight_only_linear


def _eager_cuda_or(triton_fn, torch_fn):
    """triton_fn on eager CUDA tensors; torch_fn elsewhere and under torch.compile, where Inductor
    fuses the plain-torch math into neighbouring kernels."""
    def dispatch(tensor, *args):
        if tensor.is_cuda and not torch.compiler.is_compiling():
            return triton_fn(tensor, *args)
        return torch_fn(tensor, *args)
    return dispatch


def _low_rank_added(linear):
    def with_low_rank(x, weight_fp8, weight_scale, bias, low_rank=None):
        out = linear(x, weight_fp8, weight_scale, bias)
        return out if low_rank is None else low_rank.add_to(out, x)
    return with_low_rank


def linear_for(compute_path: ComputePath):
    """The model's linear: (input, fp8 weight, scale, bias, low_rank=None) -> output in the input's
    dtype; low_rank: a LoRA kept beside the weight (quant.kernels.low_rank.LowRank)."""
    quantize_activations, dequantize_weights = quantize_rows, dequantize
    if compute_path.triton_kernels:
        from .triton_kernels import dequantize_triton, quantize_rows_triton
        quantize_activations = _eager_cuda_or(quantize_rows_triton, quantize_rows)
        dequantize_weights = _eager_cuda_or(dequantize_triton, dequantize)
    if compute_path.name == FP8_ROWWISE:
        many_rows = _low_rank_added(partial(fp8_linear_rowwise, quantize=quantize_activations))
    elif compute_path.name == FP8_TENSORWISE:
        many_rows = _low_rank_added(fp8_linear_tensorwise)
    else:
        many_rows = partial(weight_only_linear, dequantize=dequantize_weights)
    if not compute_path.triton_kernels:
        return many_rows

    from .small_m_linear import small_m_linear_op, use_small_m_kernel
    fused_small_m = small_m_linear_op()

    @_low_rank_added
    def small_m_linear(x, weight_fp8, weight_scale, bias):
        x2d = x.reshape(-1, x.shape[-1])
        return fused_small_m(x2d, weight_fp8, weight_scale, bias).reshape(*x.shape[:-1], weight_fp8.shape[0])

    def linear(x, weight_fp8, weight_scale, bias, low_rank=None):
        if use_small_m_kernel(x.reshape(-1, x.shape[-1])):
            return small_m_linear(x, weight_fp8, weight_scale, bias, low_rank)
        return many_rows(x, weight_fp8, weight_scale, bias, low_rank)
    return linear
