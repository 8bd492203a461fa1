"""A LoRA's down projection taken from FP8 rows (quant/kernels/low_rank_rows.py): the reference against
the unquantized input's projection, and the Triton kernel run on the CPU by Triton's interpreter against
the reference (tests/gpu/test_low_rank_rows.py runs it compiled, at SD3.5's sizes and inside the model)."""
import pytest
import torch

from devtools.numerics import relative_error
from devtools.triton_interpreter import run_interpreted
from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
from sd35_fp8.quant.kernels.low_rank_rows import fp8_rows_down

# e4m3's 3-bit mantissa: about 2.5% in L2 over a row (tests/quant/kernels/test_fp8_linear.py)
ROW_QUANTIZATION_BOUND = 0.03


def test_reference_is_the_projection_of_the_rows_the_fp8_weight_sees():
    x = torch.randn(300, 200) * torch.rand(300, 1) * 10
    down = (torch.randn(16, 200) * 0.05).bfloat16()
    x_fp8, x_scale = quantize_rows(x)
    low = fp8_rows_down(x_fp8, x_scale, down)
    assert low.shape == (300, 16) and low.dtype == torch.bfloat16
    exact = (x_fp8.double() * x_scale.double()) @ down.double().t()
    assert relative_error(low, exact) <= 2 ** -8  # bf16 output rounding only
    assert relative_error(low, x.double() @ down.double().t()) <= ROW_QUANTIZATION_BOUND


_INTERPRETED = """
import pack_import, torch
from devtools.triton_interpreter import use_torch_fp8_rounding
from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
from sd35_fp8.quant.kernels.triton_kernels import fp8_rows_down_triton
use_torch_fp8_rounding()
torch.manual_seed(0)
runs = []
# ragged rows and columns (edges of every block); ranks below, at and above tl.dot's 16
for rows, cols, rank in ((70, 200, 16), (33, 128, 4), (40, 300, 32)):
    x_fp8, x_scale = quantize_rows(torch.randn(rows, cols) * torch.rand(rows, 1) * 10)
    # fp16: the interpreter's tl.dot multiplies bf16 tensors' raw bits (numpy has no bf16); tests/gpu runs bf16
    down = (torch.randn(rank, cols) * 0.05).half()
    runs.append((x_fp8, x_scale, down, fp8_rows_down_triton(x_fp8, x_scale, down)))
torch.save(runs, {path!r})
"""


def test_interpreted_kernel_matches_reference(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED.format(path=str(path)), timeout=300)
    for x_fp8, x_scale, down, low in torch.load(path):
        assert low.shape == (x_fp8.shape[0], down.shape[0]) and low.dtype == down.dtype
        # the same fp32 sums up to their order: fp16 output rounding (2^-11 relative) apart
        assert relative_error(low, fp8_rows_down(x_fp8, x_scale, down)) <= 2 ** -10


_INTERPRETED_COLUMNS = """
import pack_import, torch
from devtools.triton_interpreter import use_torch_fp8_rounding
from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
from sd35_fp8.quant.kernels.low_rank_columns import rank_columns
from sd35_fp8.quant.kernels.triton_kernels import fp8_rows_columns_triton
from sd35_fp8.quant.scales import quantize_weight
use_torch_fp8_rounding()
torch.manual_seed(0)
runs = []
# ragged rows and columns; ranks below and at tl.dot's 16, LoRAs strong enough to split their ranks (the
# third over 192 columns: several of the kernel's blocks of columns); weights of ragged outputs, the last
# wider than one block of the join
for rows, cols, out, rank, std in ((70, 200, 100, 16, 0.05), (33, 128, 64, 4, 0.3), (33, 128, 64, 12, 0.3),
                                   (20, 700, 37, 8, 0.05)):
    x_fp8, _ = quantize_rows(torch.randn(rows, cols) * torch.rand(rows, 1) * 10)
    weight_fp8, weight_scale = quantize_weight(torch.randn(out, cols) * cols ** -0.5)
    up, down = torch.randn(out, rank) * std, torch.linalg.qr(torch.randn(cols, rank))[0].t()
    columns = rank_columns(up, down, weight_scale)
    # fp16: the interpreter's tl.dot multiplies bf16 tensors' raw bits (numpy has no bf16); tests/gpu runs bf16
    # the rows in the first cols values of the extended rows, as the one-pass norm leaves them
    x_ext = torch.cat([x_fp8, torch.zeros(rows, columns.spread.shape[1], dtype=x_fp8.dtype)], dim=1)
    joined = fp8_rows_columns_triton(x_ext, cols, down.half(), columns.spread, weight_fp8, columns.up_fp8)
    runs.append((x_fp8, down.half(), columns.spread, columns.up_fp8, x_ext, weight_fp8, joined))
torch.save(runs, {path!r})
"""


def test_interpreted_columns_kernel_matches_reference_and_joins_the_weight(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    from devtools.numerics import fp8_steps_apart
    from sd35_fp8.quant.kernels.low_rank_rows import fp8_rows_columns
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED_COLUMNS.format(path=str(path)), timeout=300)
    for x_fp8, down, spread, up_fp8, x_ext, weight_fp8, joined in torch.load(path):
        reference = fp8_rows_columns(x_fp8, down, spread)
        cols = x_fp8.shape[1]
        assert x_ext.shape == reference.shape and x_ext.shape[1] > cols
        assert torch.equal(x_ext[:, :cols].view(torch.uint8), x_fp8.view(torch.uint8))
        # the same exact products, fp32 sums in another order: a value on a rounding boundary one step apart
        assert fp8_steps_apart(x_ext[:, cols:].contiguous(), reference[:, cols:].contiguous()).max() <= 1
        assert reference[:, cols:].float().abs().max() > 1  # the columns carry the LoRA
        # the GEMM's other operand, joined in the same launch
        assert torch.equal(joined.view(torch.uint8), torch.cat([weight_fp8, up_fp8], dim=1).view(torch.uint8))
