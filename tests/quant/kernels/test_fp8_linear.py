"""The FP8 matmul math on CPU against fp64. torch._scaled_mm takes row-wise scales on the CPU
from torch 2.14 (2.11's refuses: "only per-tensor scaling for CPU backend"); on an older torch an
emulation of the GEMM's arithmetic stands in for it."""
import pytest
import torch

from devtools.numerics import relative_error
from sd35_fp8.quant.kernels.fp8_linear import (fp8_linear_rowwise, fp8_linear_tensorwise, quantize_rows,
                              weight_only_linear)
from sd35_fp8.quant.scales import FP8_MAX, quantize_weight

# Both operands in e4m3 (3 mantissa bits): each product carries about 2 x 2.5% relative
# rounding error, which averages down over K terms: measured 3-4% output error on Gaussian data.
FP8_MATMUL_BOUND = 0.06
WEIGHT_ONLY_BOUND = 0.04


def _cpu_takes_rowwise_scales():
    a = torch.ones(16, 16).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(a, a.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.float32)
    except RuntimeError:
        return False
    return True


def emulated_scaled_mm(a, b, *, scale_a, scale_b, bias=None, out_dtype=torch.float32):
    """The FP8 GEMM's arithmetic: products of fp8 values (exact in fp32) summed in fp32, then both
    scales, then the bias."""
    out = (a.float() @ b.float()) * scale_a * scale_b
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


@pytest.fixture(autouse=True, scope="module")
def scaled_mm_on_cpu():
    if _cpu_takes_rowwise_scales():
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "_scaled_mm", emulated_scaled_mm)
        yield


def reference_linear(x, weight, bias):
    return x.double() @ weight.double().t() + (0 if bias is None else bias.double())


def layer(out_features=96, in_features=256, outliers=False):
    weight = torch.randn(out_features, in_features) * in_features ** -0.5
    if outliers:  # log-normal row magnitudes, a few input channels ten times larger
        weight *= torch.exp(torch.randn(out_features, 1))
        weight[:, :3] *= 10
    return weight, torch.randn(out_features) * 0.1


def activations(rows=64, features=256, outliers=False):
    x = torch.randn(2, rows // 2, features)
    if outliers:
        x[..., 5] *= 50
        x[0, 3] = 0  # a row of zeros
    return x


@pytest.mark.parametrize("outliers", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rowwise_fp8_matmul_matches_fp64(outliers, dtype):
    weight, bias = layer(outliers=outliers)
    x = activations(outliers=outliers).to(dtype)
    weight_fp8, scale = quantize_weight(weight)
    out = fp8_linear_rowwise(x, weight_fp8, scale, bias.to(dtype))
    assert out.dtype == dtype and out.shape == (2, 32, 96)
    assert relative_error(out, reference_linear(x, weight, bias)) <= FP8_MATMUL_BOUND


def test_zero_rows_give_the_bias():
    weight, bias = layer()
    x = torch.zeros(4, 256)
    out = fp8_linear_rowwise(x, *quantize_weight(weight), bias)
    assert torch.isfinite(out).all() and torch.allclose(out, bias.expand(4, -1))


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_tensorwise_fallback_matches_fp64(granularity):
    weight, bias = layer()
    x = activations()
    out = fp8_linear_tensorwise(x, *quantize_weight(weight, granularity), bias)
    assert relative_error(out, reference_linear(x, weight, bias)) <= FP8_MATMUL_BOUND


def test_weight_only_and_fp8_matmul_paths_agree():
    weight, bias = layer()
    x = activations()
    weight_fp8, scale = quantize_weight(weight)
    weight_only = weight_only_linear(x, weight_fp8, scale, bias)
    assert relative_error(weight_only, reference_linear(x, weight, bias)) <= WEIGHT_ONLY_BOUND
    assert relative_error(fp8_linear_rowwise(x, weight_fp8, scale, bias), weight_only) <= FP8_MATMUL_BOUND


def test_row_quantization_uses_the_full_fp8_range_per_row():
    x = torch.randn(16, 64) * torch.logspace(-6, 6, 16)[:, None]
    x_fp8, scale = quantize_rows(x)
    assert scale.shape == (16, 1)
    assert torch.equal(x_fp8.float().abs().amax(dim=1), torch.full((16,), FP8_MAX))
    # rounded to nearest: at most half a step of e4m3 (3 mantissa bits: 2^-4 of the value), or half its
    # smallest subnormal step (2^-9) for values that small after scaling
    half_step = torch.maximum(x.abs() * 2**-4, scale * 2**-10) * (1 + 1e-5)
    assert ((x_fp8.float() * scale - x).abs() <= half_step).all()
