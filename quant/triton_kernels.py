"""Single-pass Triton kernels for eager CUDA. torch's own ops take several passes over memory
(abs-max, divide, cast; or cast, multiply) and cost as much as the GEMM they feed. Under
torch.compile the plain-torch versions in fp8_linear.py are used: Inductor fuses them itself."""
import torch
import triton
import triton.language as tl

from .scales import FP8_DTYPE, FP8_MAX, MIN_SCALE


@triton.jit
def _quantize_rows_kernel(x_ptr, out_ptr, scale_ptr, n_cols, x_row_stride,
                          FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr, BLOCK: tl.constexpr):
    # One program per row: the row is read once and stays in registers for the abs-max.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), axis=0) / FP8_MAX, MIN_SCALE)
    q = tl.clamp(x / scale, -FP8_MAX, FP8_MAX)
    tl.store(out_ptr + row * n_cols + cols, q.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + row, scale)


def quantize_rows_triton(x2d: torch.Tensor):
    """Same result as fp8_linear.quantize_rows, for a CUDA tensor."""
    rows, cols = x2d.shape
    if x2d.stride(1) != 1:
        x2d = x2d.contiguous()
    out = torch.empty((rows, cols), device=x2d.device, dtype=FP8_DTYPE)
    scale = torch.empty((rows, 1), device=x2d.device, dtype=torch.float32)
    block = triton.next_power_of_2(cols)
    _quantize_rows_kernel[(rows,)](x2d, out, scale, cols, x2d.stride(0), FP8_MAX=FP8_MAX,
                                   MIN_SCALE=MIN_SCALE, BLOCK=block,
                                   num_warps=max(4, min(16, block // 512)))
    return out, scale


@triton.jit
def _dequantize_kernel(w_ptr, scale_ptr, out_ptr, n_cols, PER_CHANNEL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    scale = tl.load(scale_ptr + row) if PER_CHANNEL else tl.load(scale_ptr)
    w = tl.load(w_ptr + row * n_cols + cols, mask=mask).to(tl.float32)
    tl.store(out_ptr + row * n_cols + cols, (w * scale).to(out_ptr.dtype.element_ty), mask=mask)


def dequantize_triton(weight_fp8: torch.Tensor, weight_scale: torch.Tensor, dtype):
    """weight_fp8 * weight_scale in `dtype`, one read of the fp8 weight and one write."""
    rows, cols = weight_fp8.shape
    out = torch.empty((rows, cols), device=weight_fp8.device, dtype=dtype)
    block = 1024
    _dequantize_kernel[(rows, triton.cdiv(cols, block))](
        weight_fp8, weight_scale.float().contiguous(), out, cols, PER_CHANNEL=weight_scale.numel() > 1,
        BLOCK=block, num_warps=4)
    return out
