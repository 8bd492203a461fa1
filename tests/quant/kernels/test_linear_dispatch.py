"""The model's linear with a LoRA beside the FP8 weight, on every compute path (CPU kernels), against
the patched layer in fp64."""
import pytest
import torch

from devtools.numerics import relative_error
from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, FP8_TENSORWISE, WEIGHT_ONLY, ComputePath
from sd35_fp8.quant.kernels.linear_dispatch import linear_for
from sd35_fp8.quant.kernels.low_rank import LowRank
from sd35_fp8.quant.scales import quantize_weight

from .test_fp8_linear import FP8_MATMUL_BOUND, WEIGHT_ONLY_BOUND, activations, layer, scaled_mm_on_cpu  # noqa: F401


@pytest.mark.parametrize("path, bound", [(WEIGHT_ONLY, WEIGHT_ONLY_BOUND), (FP8_ROWWISE, FP8_MATMUL_BOUND),
                                         (FP8_TENSORWISE, FP8_MATMUL_BOUND)])
def test_a_lora_beside_the_weight_gives_the_patched_layer(path, bound):
    weight, bias = layer()
    # given as its factors: recovering them is test_low_rank.py's job (at a 1e-6 tolerance, below
    # fp32 range finding's accuracy, the search found none about once in 50 draws)
    side = LowRank(torch.randn(weight.shape[0], 8) * 0.02, torch.randn(8, weight.shape[1]))
    lora = side.up @ side.down
    weight_fp8, scale = quantize_weight(weight)
    linear = linear_for(ComputePath(path, "test"))
    x = activations()
    out = linear(x, weight_fp8, scale, bias, side)
    expected = x.double() @ (weight + lora).double().t() + bias.double()
    without = x.double() @ weight.double().t() + bias.double()
    assert out.shape == expected.shape and out.dtype == x.dtype
    assert relative_error(out, expected) <= bound
    assert relative_error(without, expected) > 2 * bound, "the LoRA must change the layer"
    assert torch.equal(linear(x, weight_fp8, scale, bias), linear(x, weight_fp8, scale, bias, None))
