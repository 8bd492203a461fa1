"""A LoRA as extra FP8 columns of K in torch._scaled_mm (quant/kernels/low_rank_columns.py), run on this
CPU's torch._scaled_mm: against the patched layer in fp64, beside the Triton epilogue's reference
(low_rank_gemm.py), for LoRAs of growing strength and for rows at the FP8 maximum everywhere.
tests/gpu runs it on cuBLAS."""
import pytest
import torch

from devtools.numerics import relative_error
from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
from sd35_fp8.quant.kernels.low_rank import low_rank_factors
from sd35_fp8.quant.kernels.low_rank_columns import FP8_MAX, extended_rows, fp8_rows_matmul_rank_columns, rank_columns
from sd35_fp8.quant.kernels.low_rank_gemm import fp8_gemm_low_rank_reference
from sd35_fp8.quant.scales import quantize_weight

from .test_fp8_linear import FP8_MATMUL_BOUND

ROWS, IN, OUT, RANK = 512, 2432, 1024, 16  # SD3.5 Large's width


def lora(weight, strength, seed):
    """Factors of a random rank-16 change of about `strength` times the weight's norm, as the side path
    finds them (low_rank.low_rank_factors: down with orthonormal rows)."""
    generator = torch.Generator().manual_seed(seed)
    change = torch.randn(OUT, RANK, generator=generator) @ torch.randn(RANK, IN, generator=generator)
    change *= strength * weight.norm() / change.norm()
    return low_rank_factors(change, 1e-4 * float(change.norm()))


def both_ways(x, weight, factors):
    """(rank columns, the epilogue's reference, the patched layer in fp64)."""
    bias = torch.randn(OUT, generator=torch.Generator().manual_seed(1)) * 0.1
    weight_fp8, weight_scale = quantize_weight(weight)
    x_fp8, x_scale = quantize_rows(x)
    low = ((x_fp8.float() * x_scale) @ factors.down.t()).bfloat16()
    columns = rank_columns(factors.up, factors.down, weight_scale)
    assert columns.up_fp8.shape[1] % 16 == 0 and columns.up_fp8.float().abs().max() <= FP8_MAX
    in_columns = fp8_rows_matmul_rank_columns(extended_rows(x_fp8, x_scale, low, columns), x_scale, weight_fp8,
                                              weight_scale, bias.bfloat16(), torch.bfloat16, columns)
    epilogue = fp8_gemm_low_rank_reference(x_fp8, x_scale, weight_fp8, weight_scale.reshape(-1), bias.bfloat16(), low,
                                           factors.up.bfloat16())
    patched = x.double() @ (weight + factors.up @ factors.down).double().t() + bias.double()
    return in_columns, epilogue, patched, columns.up_fp8.shape[1]


@pytest.mark.parametrize("strength", [0.02, 0.08, 0.5])
def test_the_columns_carry_the_lora_as_the_epilogue_does(strength):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(ROWS, IN, generator=generator) * (1 + 3 * torch.rand(ROWS, 1, generator=generator))
    weight = torch.randn(OUT, IN, generator=generator) * IN ** -0.5
    in_columns, epilogue, patched, _ = both_ways(x, weight, lora(weight, strength, seed=3))
    print(f"strength {strength}: columns {relative_error(in_columns, patched):.5f}, "
          f"epilogue {relative_error(epilogue, patched):.5f}")
    # the LoRA's term, about `strength` of the output, rounded to FP8 once more (a few percent of it, an
    # independent error beside the FP8 product's own)
    extra = max(0.0, relative_error(in_columns, patched) ** 2 - relative_error(epilogue, patched) ** 2) ** 0.5
    assert extra <= 0.04 * strength
    assert relative_error(in_columns, patched) <= FP8_MATMUL_BOUND


def test_a_stronger_lora_takes_more_columns():
    weight = torch.randn(OUT, IN, generator=torch.Generator().manual_seed(4)) * IN ** -0.5
    _, scale = quantize_weight(weight)
    widths = [rank_columns(f.up, f.down, scale).up_fp8.shape[1] for f in (lora(weight, s, 5) for s in (0.02, 0.08, 0.5))]
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_the_columns_fill_the_gemms_k_to_a_multiple_of_128_where_that_fits():
    """cuBLAS's FP8 GEMM runs a K of 16 mod 32 about a fifth slower, and multiples of 128 fastest
    (bench/results/kernels_lora_columns_width.json); a layer too narrow for the padding (a quarter of its inputs
    at most) pads to a multiple of 64 where that fits, else takes the columns it needs."""
    generator = torch.Generator().manual_seed(8)
    for in_features, strength, expected in ((IN, 0.02, 128), (IN, 0.2, 256), (256, 0.02, 64), (128, 0.02, 16)):
        weight = torch.randn(OUT, in_features, generator=generator) * in_features ** -0.5
        change = torch.randn(OUT, RANK, generator=generator) @ torch.randn(RANK, in_features, generator=generator)
        factors = low_rank_factors(change * strength * weight.norm() / change.norm(), 1e-4 * float(change.norm()))
        _, scale = quantize_weight(weight)
        assert rank_columns(factors.up, factors.down, scale).up_fp8.shape[1] == expected


def test_each_rank_takes_the_columns_its_own_range_needs():
    """One strong rank among weak ones (a real LoRA's decaying spectrum): the strong rank is split over
    many columns, the weak ones take one each, so the whole fits in 128, where splitting every rank as the
    strongest needs took 784 (beyond the quarter of K the columns may take: the slower epilogue GEMM then);
    the layer's output is as exact as with the LoRA in the epilogue."""
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(ROWS, IN, generator=generator)
    weight = torch.randn(OUT, IN, generator=generator) * IN ** -0.5
    strengths = torch.tensor([1.0] + [0.02] * (RANK - 1))
    change = (torch.randn(OUT, RANK, generator=generator) * strengths) @ torch.randn(RANK, IN, generator=generator)
    factors = low_rank_factors(change * 0.3 * weight.norm() / change.norm(), 1e-4 * float(change.norm()))
    in_columns, epilogue, patched, width = both_ways(x, weight, factors)
    assert width == 128
    assert relative_error(in_columns, patched) <= relative_error(epilogue, patched) + 0.005


def test_rows_at_the_fp8_maximum_everywhere():
    """The widest rows FP8 can hold (every value at the row's maximum): the columns' bound is three of
    these rows' standard deviations, so a few values clamp, and only a few."""
    generator = torch.Generator().manual_seed(6)
    x = torch.randint(0, 2, (ROWS, IN), generator=generator).float() * 2 - 1
    weight = torch.randn(OUT, IN, generator=generator) * IN ** -0.5
    in_columns, epilogue, patched, _ = both_ways(x, weight, lora(weight, 0.08, seed=7))
    assert relative_error(in_columns, patched) <= relative_error(epilogue, patched) + 0.002
