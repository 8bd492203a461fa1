"""The linear-layer math for FP8 weights: weight-only, and FP8 x FP8 through torch._scaled_mm.

Activations are quantized per token (one fp32 scale per row, absmax / 448). These functions are
the reference and the torch.compile path where Inductor fuses the row quantization with whatever
produced the activation in one pass; CUDA passes the single-pass Triton kernels elsewhere
(row_quantize.py).
"""
import torch
import torch.nn.functional as F

from ..scales import absmax_scale, quantize_with_scale

# Hopper's FP8 tensor cores accumulate in fewer bits than fp32 unless the GEMM promotes its partial sums
# every few steps of K, which costs the GEMM about a tenth of its rate at SD3.5's shapes; the sums' own
# rounding stays far below the inputs' FP8 rounding there (bench/results/fast_accum.json). Triton's FP8
# dot on Hopper accumulates the same way by default (quant/kernels/triton_low_rank_gemm.py).
FAST_ACCUMULATION = True


def quantize_rows(x: torch.Tensor):
    """x (..., cols) -> (x_fp8 (rows, cols), row_scale (rows, 1) fp32)."""
    x = x.reshape(-1, x.shape[-1]).float()
    scale = absmax_scale(x.abs().amax(dim=1, keepdim=True))
    return quantize_with_scale(x, scale), scale


def quantize_tensorwise(x2d: torch.Tensor):
    """Returns (x_fp8, scale) with one fp32 scale of shape ()."""
    x = x2d.float()
    scale = absmax_scale(x.abs().amax())
    return quantize_with_scale(x, scale), scale


def dequantize(weight_fp8, weight_scale, dtype):
    return weight_fp8.to(dtype) * weight_scale.to(dtype)


def weight_only_linear(x, weight_fp8, weight_scale, bias, low_rank=None, dequantize=dequantize):
    """low_rank: a LoRA kept beside the weight (quant.kernels.low_rank.LowRank), merged into the
    weight dequantized for this call."""
    weight = dequantize(weight_fp8, weight_scale, x.dtype)
    if low_rank is not None:
        weight = low_rank.merge_into(weight)
    return F.linear(x, weight, bias)


def scale_per_output(weight_scale, out_features):
    """A weight scale of shape (out, 1) per channel or () per tensor as one fp32 value per output,
    contiguous, shape (out,)."""
    if weight_scale.dtype == torch.float32 and weight_scale.numel() == out_features and weight_scale.is_contiguous():
        # the stored per-channel scale as it is: one view, where the general case is four ops of
        # host time on every call of every layer
        return weight_scale.view(out_features)
    return weight_scale.float().reshape(-1).expand(out_features).contiguous()


def fp8_linear_rowwise(x, weight_fp8, weight_scale, bias, quantize=quantize_rows):
    """weight_scale: (out, 1) per channel or () per tensor; output in x.dtype. quantize: x (..., cols) ->
    (fp8 rows, row scales), given x as it is (row_quantize.py's kernel reads a slice of tokens in place)."""
    x_fp8, x_scale = quantize(x)
    return fp8_rows_matmul(x_fp8, x_scale, weight_fp8, weight_scale, bias, x.dtype).reshape(
        *x.shape[:-1], weight_fp8.shape[0])


def fp8_rows_matmul(x_fp8, x_scale, weight_fp8, weight_scale, bias, out_dtype):
    """The matmul of fp8_linear_rowwise on activations already quantized: x_fp8 (rows, in) with
    x_scale (rows, 1); output (rows, out) in out_dtype."""
    out_features = weight_fp8.shape[0]
    w_scale = scale_per_output(weight_scale, out_features).view(1, out_features)
    return torch._scaled_mm(x_fp8, weight_fp8.t(), scale_a=x_scale, scale_b=w_scale, bias=bias, out_dtype=out_dtype,
                            use_fast_accum=FAST_ACCUMULATION)


def fp8_linear_tensorwise(x, weight_fp8, weight_scale, bias):
    """For torch builds without row-wise scaled_mm: per-tensor activation scale; a per-channel
    weight scale is applied to the output."""
    x2d = x.reshape(-1, x.shape[-1])
    x_fp8, x_scale = quantize_tensorwise(x2d)
    one = torch.ones((), device=x.device, dtype=torch.float32)
    out = torch._scaled_mm(x_fp8, weight_fp8.t(), scale_a=x_scale, scale_b=one, out_dtype=torch.float32,
                           use_fast_accum=FAST_ACCUMULATION)
    out = out * weight_scale.float().reshape(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype).reshape(*x.shape[:-1], weight_fp8.shape[0])
