"""A LoRA's down projection and columns from FP8 rows on a real GPU: the Triton kernels at SD3.5's sizes
against the references, the op through torch's checks, and the model's linear on the one-pass norm's rows
with a LoRA. CI has no GPU: every test here skips there (tests/quant/kernels/test_low_rank_rows.py runs the
kernels under Triton's interpreter; tests/gpu/test_norm_quantize.py runs them inside the model)."""
import pytest
import torch

from devtools.numerics import relative_error

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")


def fp8_rows(rows, cols):
    from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
    return quantize_rows(torch.randn(rows, cols, device="cuda") * torch.rand(rows, 1, device="cuda") * 10)


# 2 x 4096 tokens of Large and Medium; a LoRA's usual ranks; a partial block of rows
@pytest.mark.parametrize("rows, cols, rank", [(8192, 2432, 16), (8192, 1536, 32), (8192, 2432, 4), (154, 2432, 16)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_matches_reference(rows, cols, rank, dtype):
    from sd35_fp8.quant.kernels.low_rank_rows import fp8_rows_down
    from sd35_fp8.quant.kernels.triton_kernels import fp8_rows_down_triton
    x_fp8, x_scale = fp8_rows(rows, cols)
    down = (torch.randn(rank, cols, device="cuda") * 0.02).to(dtype)
    low = fp8_rows_down_triton(x_fp8, x_scale, down)
    assert low.shape == (rows, rank) and low.dtype == dtype
    # the same exact products, fp32 sums in another order: the output's rounding apart
    assert relative_error(low, fp8_rows_down(x_fp8, x_scale, down)) <= 2 ** -8


# rank 32 at this size: two stacked LoRAs, 160 columns
@pytest.mark.parametrize("rows, cols, out_features, rank", [(8192, 2432, 7296, 16), (154, 2432, 7296, 16),
                                                            (8192, 1536, 6144, 16), (8192, 2432, 7296, 32)])
def test_columns_kernel_matches_reference(rows, cols, out_features, rank):
    from devtools.numerics import fp8_steps_apart
    from sd35_fp8.quant.kernels.low_rank_columns import rank_columns
    from sd35_fp8.quant.kernels.low_rank_rows import fp8_rows_columns
    from sd35_fp8.quant.kernels.triton_kernels import fp8_rows_columns_triton
    from sd35_fp8.quant.scales import quantize_weight
    x_fp8, _ = fp8_rows(rows, cols)
    weight_fp8, weight_scale = quantize_weight(torch.randn(out_features, cols, device="cuda") * cols ** -0.5)
    up, down = torch.randn(out_features, rank, device="cuda") * 0.03, torch.randn(rank, cols, device="cuda") * 0.03
    columns = rank_columns(up, down, weight_scale)
    spread = columns.spread
    # the rows in the first cols values of the extended rows, as the one-pass norm leaves them
    x_ext = torch.empty((rows, cols + spread.shape[1]), device="cuda", dtype=x_fp8.dtype)
    x_ext[:, :cols] = x_fp8
    joined = fp8_rows_columns_triton(x_ext, cols, down.bfloat16(), spread, weight_fp8, columns.up_fp8)
    reference = fp8_rows_columns(x_fp8, down.bfloat16(), spread)
    assert torch.equal(x_ext[:, :cols].contiguous().view(torch.uint8), x_fp8.view(torch.uint8))
    assert torch.equal(joined.view(torch.uint8), torch.cat([weight_fp8, columns.up_fp8], dim=1).view(torch.uint8))
    apart = fp8_steps_apart(x_ext[:, cols:].contiguous(), reference[:, cols:].contiguous())
    # the kernel spreads the rank sums over the columns in TF32 (rounding 2^-11, FP8's step 2^-4 to 2^-3):
    # a value that close to a rounding boundary lands one step off, 0.7-0.8% of them on an H200
    assert apart.max() <= 1 and (apart > 0).float().mean() <= 0.02


def test_the_custom_op_passes_torchs_checks():
    from sd35_fp8.quant.kernels.low_rank_rows import fp8_rows_down_op
    x_fp8, x_scale = fp8_rows(300, 1536)
    # not test_schema: it runs the op under a mode that multiplies its inputs, which fp8 tensors do not support
    checks = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    down = torch.randn(16, 1536, device="cuda").bfloat16()
    torch.library.opcheck(fp8_rows_down_op().op, (x_fp8, x_scale, down), test_utils=checks)


# SD3.5 Large's x qkv (the LoRA in the GEMM's epilogue) and fc2's shape (added after the GEMM); or the LoRA
# as extra columns of cuBLAS's GEMM (quant/kernels/low_rank_columns.py), as the side path now carries it; the
# context stream's 154 tokens a sample (added after the GEMM, columns or not)
@pytest.mark.parametrize("in_columns", [True, False])
@pytest.mark.parametrize("tokens, out_features, in_features", [(4096, 7296, 2432), (4096, 2432, 9728),
                                                               (154, 7296, 2432)])
def test_the_norm_rows_linear_with_a_lora_gives_the_patched_layer(tokens, out_features, in_features, in_columns):
    from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
    from sd35_fp8.quant.kernels.linear_dispatch import norm_rows_linear_for
    from sd35_fp8.quant.kernels.low_rank import LowRank
    from sd35_fp8.quant.kernels.low_rank_columns import rank_columns
    from sd35_fp8.quant.kernels.norm_quantize import layer_norm_modulate
    from sd35_fp8.quant.scales import quantize_weight
    from tests.quant.kernels.test_fp8_linear import FP8_MATMUL_BOUND
    x = (torch.randn(2, tokens, in_features, device="cuda") * 4).bfloat16()
    shift, scale = (torch.randn(2, 2 * in_features, device="cuda") * 0.5).bfloat16().chunk(2, dim=1)
    weight = torch.randn(out_features, in_features, device="cuda") * in_features ** -0.5
    bias = torch.randn(out_features, device="cuda") * 0.1
    up, down = (torch.randn(out_features, 16, device="cuda") * 0.03, torch.randn(16, in_features, device="cuda") * 0.03)
    weight_fp8, weight_scale = quantize_weight(weight)
    norm_rows_linear = norm_rows_linear_for(ComputePath(FP8_ROWWISE, "test", triton_kernels=True))
    args = (x, shift, scale, 1e-6, weight_fp8, weight_scale, bias.bfloat16())
    columns = rank_columns(up, down, weight_scale) if in_columns else None
    with_lora = norm_rows_linear(*args, LowRank(up.bfloat16(), down.bfloat16(), columns))
    normalized = layer_norm_modulate(x, shift, scale, 1e-6).reshape(-1, in_features)
    patched = normalized.double() @ (weight + up @ down).double().t() + bias.double()
    assert with_lora.shape == (2 * tokens, out_features) and with_lora.dtype == torch.bfloat16
    assert relative_error(with_lora, patched) <= FP8_MATMUL_BOUND
    assert relative_error(norm_rows_linear(*args), patched) > 0.1, "the LoRA must change the output clearly"
