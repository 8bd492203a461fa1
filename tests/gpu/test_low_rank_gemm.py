"""The row-wise FP8 GEMMs with a LoRA in their epilogue (TMA loads and stores, and plain loads), compiled for the GPU at
SD3.5's layer sizes, against their fp32 reference; and the MLP's fc2 (GELU fused into its
quantization), whose LoRA is added after the GEMM, eager and under torch.compile. CI has no GPU:
every test here skips there."""
import pytest
import torch

from devtools.numerics import relative_error

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")

FP8_MATMUL_BOUND = 0.06


@pytest.mark.parametrize("m,k,n", [(8192, 2432, 7296), (8192, 2432, 9728), (8192, 1536, 4608), (308, 2432, 7296),
                                   (1000, 208, 200), (1000, 208, 90), (1000, 200, 90)])
@pytest.mark.parametrize("rank, with_bias", [(16, True), (32, False)])
@pytest.mark.parametrize("loads", ["tma", "plain"])
def test_kernels_match_reference_at_sd35_sizes(m, k, n, rank, with_bias, loads):
    from sd35_fp8.quant.kernels import triton_low_rank_gemm
    from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
    from sd35_fp8.quant.kernels.low_rank_gemm import fp8_gemm_low_rank_reference
    from sd35_fp8.quant.scales import quantize_weight
    if loads == "tma" and (torch.cuda.get_device_capability() < (9, 0) or k % 16 or n % 8):
        pytest.skip("TMA needs compute capability 9.0 and rows of a multiple of 16 bytes")
    kernel = (triton_low_rank_gemm.fp8_gemm_low_rank_tma_triton if loads == "tma"
              else triton_low_rank_gemm.fp8_gemm_low_rank_triton)
    x_fp8, x_scale = quantize_rows(torch.randn(m, k, device="cuda"))
    weight_fp8, w_scale = quantize_weight(torch.randn(n, k, device="cuda") * k ** -0.5)
    w_scale = w_scale.reshape(-1).contiguous()
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) if with_bias else None
    low = torch.randn(m, rank, device="cuda", dtype=torch.bfloat16)
    up = torch.randn(n, rank, device="cuda", dtype=torch.bfloat16) * 0.1
    out = kernel(x_fp8, x_scale, weight_fp8, w_scale, bias, low, up)
    reference = fp8_gemm_low_rank_reference(x_fp8, x_scale, weight_fp8, w_scale, bias, low, up)
    assert out.dtype == torch.bfloat16 and not torch.isnan(out).any()
    assert relative_error(out, reference) <= 0.005  # bf16 output rounding, fp32 accumulation order
    assert relative_error(fp8_gemm_low_rank_reference(x_fp8, x_scale, weight_fp8, w_scale, bias, low * 0, up),
                          reference) > 0.05, "the LoRA must change the output"


def test_fc2_with_a_lora_sees_the_gelu_eager_and_compiled():
    from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
    from sd35_fp8.quant.kernels.gelu_quantize import GELU_TANH, gelu_tanh
    from sd35_fp8.quant.kernels.linear_dispatch import linear_for
    from sd35_fp8.quant.kernels.low_rank import LowRank
    from sd35_fp8.quant.scales import quantize_weight
    k, n = 9728, 2432
    weight = torch.randn(n, k, device="cuda") * k ** -0.5
    side = LowRank(torch.randn(n, 16, device="cuda", dtype=torch.bfloat16) * 0.05,
                   torch.randn(16, k, device="cuda", dtype=torch.bfloat16) * 0.05)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) * 0.1
    weight_fp8, scale = quantize_weight(weight)
    linear = linear_for(ComputePath(FP8_ROWWISE, "test", triton_kernels=True), GELU_TANH)
    x = torch.randn(2, 4096, k, device="cuda", dtype=torch.bfloat16) * 1.5
    seen = gelu_tanh(x.double())
    expected = seen @ (weight.double() + side.up.double() @ side.down.double()).t() + bias.double()
    assert relative_error(seen @ weight.double().t() + bias.double(), expected) > 2 * FP8_MATMUL_BOUND
    with torch.no_grad():
        eager = linear(x, weight_fp8, scale, bias, side)
        compiled = torch.compile(linear, fullgraph=True)(x, weight_fp8, scale, bias, side)
    for out in (eager, compiled):
        assert out.shape == (2, 4096, n) and relative_error(out, expected) <= FP8_MATMUL_BOUND
