"""A LoRA as extra FP8 columns of cuBLAS's GEMM (quant/kernels/low_rank_columns.py) on a real GPU, through
the model's linear, eager and under torch.compile. CI has no GPU: every test here skips there
(tests/quant/kernels/test_low_rank_columns.py runs the math on the CPU's torch._scaled_mm)."""
import pytest
import torch

from devtools.numerics import relative_error

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")


@pytest.mark.parametrize("out_features", [7296, 2432])  # SD3.5 Large's qkv and proj
def test_a_linear_with_a_lora_in_columns_gives_the_patched_layer_eager_and_compiled(out_features):
    from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
    from sd35_fp8.quant.kernels.linear_dispatch import linear_for
    from sd35_fp8.quant.kernels.low_rank import LowRank
    from sd35_fp8.quant.kernels.low_rank_columns import rank_columns
    from sd35_fp8.quant.scales import quantize_weight
    from tests.quant.kernels.test_fp8_linear import FP8_MATMUL_BOUND
    k = 2432
    weight = torch.randn(out_features, k, device="cuda") * k ** -0.5
    up, down = torch.randn(out_features, 16, device="cuda") * 0.03, torch.randn(16, k, device="cuda") * 0.03
    bias = torch.randn(out_features, device="cuda", dtype=torch.bfloat16) * 0.1
    weight_fp8, scale = quantize_weight(weight)
    side = LowRank(up.bfloat16(), down.bfloat16(), rank_columns(up, down, scale))
    linear = linear_for(ComputePath(FP8_ROWWISE, "test", triton_kernels=True))
    x = torch.randn(2, 4096, k, device="cuda", dtype=torch.bfloat16)
    expected = x.double() @ (weight + up @ down).double().t() + bias.double()
    assert relative_error(x.double() @ weight.double().t() + bias.double(), expected) > 2 * FP8_MATMUL_BOUND
    with torch.no_grad():
        eager = linear(x, weight_fp8, scale, bias, side)
        compiled = torch.compile(linear, fullgraph=True)(x, weight_fp8, scale, bias, side)
    for out in (eager, compiled):
        assert out.shape == (2, 4096, out_features) and relative_error(out, expected) <= FP8_MATMUL_BOUND
