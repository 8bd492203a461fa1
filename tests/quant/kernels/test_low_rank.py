import pytest
import torch

from devtools.numerics import relative_error
from sd35_fp8.quant.kernels.low_rank import MAX_RANK, lora_beside, low_rank_factors
from sd35_fp8.quant.kernels.low_rank_columns import rank_columns
from sd35_fp8.quant.scales import dequantize_weight, quantize_weight


@pytest.mark.parametrize("rank", [1, 16, 32, MAX_RANK])
def test_factors_reproduce_a_low_rank_difference(rank):
    out_features, in_features = 300, 200
    difference = torch.randn(out_features, rank) @ torch.randn(rank, in_features) * 0.01
    factors = low_rank_factors(difference, tolerance=1e-5 * torch.linalg.matrix_norm(difference))
    assert factors is not None and factors.up.shape == (out_features, rank) and factors.down.shape == (rank, in_features)
    assert relative_error(factors.up @ factors.down, difference) <= 1e-5


def test_factors_come_in_the_compute_dtype_asked_for():
    weight_fp8, scale = quantize_weight(torch.randn(64, 48) * 48 ** -0.5)
    lora = torch.randn(64, 4) @ torch.randn(4, 48) * 0.01
    side = lora_beside(weight_fp8, scale, dequantize_weight(weight_fp8, scale) + lora, dtype=torch.bfloat16)
    assert side.up.dtype == side.down.dtype == torch.bfloat16
    assert relative_error(side.up.float() @ side.down.float(), lora) <= 0.01  # bf16 rounding of each factor


def test_the_lora_columns_come_only_where_asked_for_and_where_they_fit():
    """A quarter of the layer's 256 inputs: 64 columns at most."""
    weight_fp8, scale = quantize_weight(torch.randn(96, 256) * 256 ** -0.5)
    real = dequantize_weight(weight_fp8, scale)
    change = torch.randn(96, 4) @ torch.randn(4, 256)
    change *= real.norm() / change.norm()
    patched = real + change * 0.05
    assert lora_beside(weight_fp8, scale, patched).columns is None
    columns = lora_beside(weight_fp8, scale, patched, with_columns=True).columns
    # rank 4 needs about 16 columns; zero columns fill the GEMM's K to 320, a multiple of 64 (384, the next
    # multiple of 128, would take more than the quarter)
    assert columns.up_fp8.shape == (96, 64) and columns.spread.shape == (4, 64)
    too_strong = lora_beside(weight_fp8, scale, real + change * 3, with_columns=True)
    assert too_strong is not None and too_strong.columns is None
    assert rank_columns(too_strong.up, too_strong.down, scale).up_fp8.shape[1] > 64


def test_a_difference_above_the_rank_limit_has_no_factors():
    assert low_rank_factors(torch.randn(300, 200), tolerance=1.0) is None
    assert low_rank_factors(torch.randn(100, 20) @ torch.randn(20, 80), tolerance=1e-3, max_rank=16) is None


def test_rounding_noise_within_the_tolerance_does_not_raise_the_rank():
    """A LoRA patch computed in fp16 (ComfyUI 0.33's LoRA dtype on a GPU): the factors keep the
    LoRA's rank, not the rank of the rounding noise."""
    weight = torch.randn(256, 192) * 192 ** -0.5
    lora = torch.randn(256, 8) @ torch.randn(8, 192) * 0.01
    difference = (weight.half() + lora.half()).float() - weight.half().float()
    tolerance = torch.finfo(torch.float16).eps * torch.linalg.matrix_norm(weight)
    factors = low_rank_factors(difference, tolerance)
    assert factors.up.shape[1] == 8
    assert relative_error(factors.up @ factors.down, lora) <= 0.02


def test_a_zero_difference_gives_rank_zero_factors_that_add_nothing():
    factors = low_rank_factors(torch.zeros(50, 40), tolerance=0.0)
    x, out = torch.randn(3, 40), torch.randn(3, 50)
    assert factors.up.shape == (50, 0) and torch.equal(factors.add_to(out.clone(), x), out)


def test_a_lora_that_changes_nothing_has_rank_zero_and_no_columns():
    """LoraLoader at model strength 0 beside a CLIP strength patches every layer with its own weight: the
    side path is of rank 0, with no FP8 columns (the range of no rank to take them from)."""
    weight_fp8, scale = quantize_weight(torch.randn(96, 256) * 256 ** -0.5)
    side = lora_beside(weight_fp8, scale, dequantize_weight(weight_fp8, scale), torch.bfloat16, with_columns=True)
    assert side.up.shape == (96, 0) and side.down.shape == (0, 256) and side.columns is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_to_matches_the_merged_product(dtype):
    difference = torch.randn(64, 8) @ torch.randn(8, 48)
    x, out = torch.randn(2, 5, 48, dtype=dtype), torch.randn(2, 5, 64, dtype=dtype)
    expected = out.double() + x.double() @ difference.double().t()
    result = low_rank_factors(difference, tolerance=1e-5 * torch.linalg.matrix_norm(difference)).add_to(out, x)
    assert result is out and out.dtype == dtype
    assert relative_error(out, expected) <= (1e-5 if dtype == torch.float32 else 1e-2)


def test_factors_in_their_own_dtype_are_handed_out_as_stored():
    """The per-call path asks for the factors in the compute dtype they were stored in: no copy (nor
    the host time of a `.to` that changes nothing); another dtype gets converted copies."""
    difference = torch.randn(64, 8) @ torch.randn(8, 48)
    factors = low_rank_factors(difference, tolerance=1e-5 * torch.linalg.matrix_norm(difference))
    up, down = factors.factors_in(torch.float32)
    assert up is factors.up and down is factors.down
    up, down = factors.factors_in(torch.bfloat16)
    assert up.dtype == down.dtype == torch.bfloat16 and torch.equal(up, factors.up.bfloat16())
    assert torch.equal(down, factors.down.bfloat16())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lora_beside_an_fp8_weight_from_a_patch_computed_in_any_float_dtype(dtype):
    """ComfyUI merges a LoRA in float32 (0.3.75) or in fp16 on a GPU (0.33): either way the side
    path carries the LoRA, not the dtype's rounding noise."""
    weight_fp8, scale = quantize_weight(torch.randn(256, 192) * 192 ** -0.5)
    lora = torch.randn(256, 8) @ torch.randn(8, 192) * 0.01
    real = dequantize_weight(weight_fp8, scale)
    side = lora_beside(weight_fp8, scale, (real.to(dtype) + lora.to(dtype)))
    assert side is not None and side.up.shape[1] == 8
    assert relative_error(side.up @ side.down, lora) <= {torch.float32: 1e-4, torch.float16: 0.02, torch.bfloat16: 0.1}[dtype]


def test_a_full_rank_patch_has_no_side_path():
    weight_fp8, scale = quantize_weight(torch.randn(256, 192) * 192 ** -0.5)
    real = dequantize_weight(weight_fp8, scale)
    assert lora_beside(weight_fp8, scale, real + torch.randn(256, 192) * 0.01) is None
