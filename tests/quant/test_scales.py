import pytest
import torch

from devtools.numerics import relative_error
from sd35_fp8.quant.scales import FP8_DTYPE, FP8_MAX, dequantize_weight, quantize_weight, weight_scale

STDS = [1e-4, 1e-3, 2e-2, 1.0, 10.0]


def gaussian(std, dtype=torch.float32, shape=(256, 512)):
    return (torch.randn(shape, dtype=torch.float64) * std).to(dtype)


@pytest.mark.parametrize("std", STDS)
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_dequantized_error_within_3_percent(std, granularity):
    weight = gaussian(std)
    weight_fp8, scale = quantize_weight(weight, granularity)
    assert weight_fp8.dtype == FP8_DTYPE and scale.dtype == torch.float32
    assert relative_error(dequantize_weight(weight_fp8, scale), weight) <= 0.03


@pytest.mark.parametrize("std", [1e-4, 1e-3])
def test_stock_unscaled_cast_fails_where_scales_hold(std):
    weight = gaussian(std)
    stock_error = relative_error(weight.to(FP8_DTYPE).float(), weight)
    ours = relative_error(dequantize_weight(*quantize_weight(weight)), weight)
    assert stock_error > 0.03 and ours <= 0.03


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_input_dtypes(dtype):
    weight = gaussian(0.02, dtype)
    weight_fp8, scale = quantize_weight(weight)
    assert relative_error(dequantize_weight(weight_fp8, scale), weight) <= 0.03


def test_zero_rows_and_zero_tensor_stay_zero():
    weight = gaussian(0.02)
    weight[::3] = 0
    for tensor in (weight, torch.zeros(16, 32)):
        for granularity in ("per_channel", "per_tensor"):
            weight_fp8, scale = quantize_weight(tensor, granularity)
            restored = dequantize_weight(weight_fp8, scale)
            assert torch.isfinite(scale).all() and torch.isfinite(restored).all()
            assert (restored[tensor == 0] == 0).all()


@pytest.mark.parametrize("std", [1e-30, 1e-20, 1e20, 1e35])
def test_extreme_magnitudes_stay_finite(std):
    weight = gaussian(std)
    weight_fp8, scale = quantize_weight(weight)
    restored = dequantize_weight(weight_fp8, scale)
    assert torch.isfinite(restored).all()
    assert relative_error(restored, weight) <= 0.03


def test_largest_value_of_each_row_maps_to_fp8_max():
    weight = gaussian(0.5)
    weight_fp8, scale = quantize_weight(weight)
    assert torch.equal(weight_fp8.float().abs().amax(dim=1), torch.full((256,), FP8_MAX))
    assert scale.shape == (256, 1)
    assert weight_scale(weight, "per_tensor").shape == ()


def test_per_channel_scales_match_optimum_quanto_qfloat8():
    from optimum.quanto import absmax_scale, qfloat8
    weight = torch.randn(384, 128) * torch.rand(384, 1) * 0.1
    quanto_scale = absmax_scale(weight, qfloat8, axis=0)
    torch.testing.assert_close(weight_scale(weight), quanto_scale.float(), rtol=1e-6, atol=0)
