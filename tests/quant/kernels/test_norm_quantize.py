"""The adaLN block's layer norm + modulation + row-wise FP8 quantization in one pass: the reference
against ComfyUI's own arithmetic in fp64, and the Triton kernel run on the CPU by Triton's interpreter
against the reference (tests/gpu runs it compiled, at SD3.5's sizes and inside the model)."""
import pytest
import torch
import torch.nn.functional as F

from devtools.numerics import fp8_steps_apart, relative_error
from devtools.triton_interpreter import run_interpreted
from sd35_fp8.quant.kernels.norm_quantize import layer_norm_modulate, layer_norm_modulate_quantize_rows
from sd35_fp8.quant.scales import MIN_SCALE

# e4m3's 3-bit mantissa: about 2.5% in L2 over a row (tests/quant/kernels/test_fp8_linear.py)
ROW_QUANTIZATION_BOUND = 0.03


def block_inputs(batch=2, tokens=40, channels=200, seed=0, dtype=torch.float32):
    """A residual stream with a large mean and spread per token (as deep blocks have), and the
    modulation's shift and scale per sample: chunks of one adaLN output, so strided rows."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, tokens, channels, generator=generator) * 4
         + torch.randn(batch, tokens, 1, generator=generator) * 10)
    x[0, 3] = 7  # a constant token: normalized to zeros, its row quantizes to zeros at the smallest scale
    modulation = (torch.randn(batch, 6 * channels, generator=generator) * 0.5).to(dtype)
    shift, scale = modulation.chunk(6, dim=1)[:2]
    return x.to(dtype), shift, scale


def test_reference_is_comfyuis_norm_and_modulation_in_fp64():
    x, shift, scale = block_inputs()
    exact = F.layer_norm(x.double(), (200,), eps=1e-6) * (1 + scale.double().unsqueeze(1)) + shift.double().unsqueeze(1)
    assert relative_error(layer_norm_modulate(x, shift, scale, 1e-6), exact) <= 1e-6
    x_fp8, x_scale = layer_norm_modulate_quantize_rows(x.bfloat16(), shift.bfloat16(), scale.bfloat16(), 1e-6)
    assert x_fp8.shape == (80, 200) and x_scale.shape == (80, 1) and x_fp8.dtype == torch.float8_e4m3fn
    assert relative_error((x_fp8.float() * x_scale).reshape(2, 40, 200), exact) <= ROW_QUANTIZATION_BOUND
    # the constant token: the shift alone is left, quantized at its own scale
    torch.testing.assert_close(x_fp8[3].float() * x_scale[3], shift[0].bfloat16().float(), rtol=0.07, atol=0)


_INTERPRETED = """
import pack_import, torch
from devtools.triton_interpreter import use_torch_fp8_rounding
from sd35_fp8.quant.kernels.triton_kernels import layer_norm_modulate_quantize_rows_triton
from tests.quant.kernels.test_norm_quantize import block_inputs
use_torch_fp8_rounding()
runs = []
# 40 tokens: 8 rows per program; 7 tokens: one
for dtype, channels, tokens in ((torch.bfloat16, 200, 40), (torch.float16, 256, 40), (torch.float32, 96, 40),
                                (torch.bfloat16, 200, 7)):
    x, shift, scale = block_inputs(tokens=tokens, channels=channels, dtype=dtype)
    shift[1] = 0
    runs.append((x, shift, scale, *layer_norm_modulate_quantize_rows_triton(x, shift, scale, 1e-6)))
torch.save(runs, {path!r})
"""


def test_interpreted_kernel_matches_reference(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED.format(path=str(path)), timeout=300)
    for x, shift, scale, x_fp8, x_scale in torch.load(path):
        assert not shift.is_contiguous()  # rows of the adaLN output, read in place
        reference, reference_scale = layer_norm_modulate_quantize_rows(x, shift, scale, 1e-6)
        # the same fp32 arithmetic up to the order of the sums: scales a few ulps apart, values at
        # most one fp8 step apart where a value lands on a rounding boundary
        torch.testing.assert_close(x_scale, reference_scale, rtol=1e-5, atol=0)
        assert fp8_steps_apart(x_fp8, reference).max() <= 1
        assert (fp8_steps_apart(x_fp8, reference) > 0).float().mean() <= 0.01
        assert x_scale.min() >= MIN_SCALE


_INTERPRETED_DOWN = """
import pack_import, torch
from devtools.triton_interpreter import use_torch_fp8_rounding
from sd35_fp8.quant.kernels.triton_kernels import layer_norm_modulate_quantize_rows_down_triton
from tests.quant.kernels.test_norm_quantize import block_inputs
use_torch_fp8_rounding()
torch.manual_seed(0)
runs = []
# a power-of-two row and a ragged one (head and tail); ranks within one block of ranks, ragged, and several
for dtype, channels, tokens, rank in ((torch.bfloat16, 256, 7, 4), (torch.bfloat16, 200, 9, 6),
                                      (torch.float16, 200, 5, 16)):
    x, shift, scale = block_inputs(tokens=tokens, channels=channels, dtype=dtype)
    # fp16: the interpreter rounds fp32 to bf16 by truncation (numpy has no bf16); tests/gpu runs bf16
    down = (torch.randn(rank, channels) * 0.05).half()
    runs.append((x, shift, scale, down, *layer_norm_modulate_quantize_rows_down_triton(x, shift, scale, 1e-6, down)))
torch.save(runs, {path!r})
"""


def test_interpreted_kernel_with_a_loras_down_projection_matches_the_norm_and_the_projection(tmp_path):
    """The norm for few rows with a LoRA's down projection in the same launch: the norm's rows and scales, and
    the projection low_rank_rows.fp8_rows_down computes from those rows."""
    pytest.importorskip("triton", reason="Triton is not installed")
    from sd35_fp8.quant.kernels.low_rank_rows import fp8_rows_down
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED_DOWN.format(path=str(path)), timeout=300)
    for x, shift, scale, down, x_fp8, x_scale, low in torch.load(path):
        reference, reference_scale = layer_norm_modulate_quantize_rows(x, shift, scale, 1e-6)
        torch.testing.assert_close(x_scale, reference_scale, rtol=1e-5, atol=0)
        assert fp8_steps_apart(x_fp8, reference).max() <= 1
        assert low.shape == (x_fp8.shape[0], down.shape[0]) and low.dtype == down.dtype
        # from the kernel's own rows: the same fp32 sums up to their order, fp16 output rounding (2^-11) apart
        assert relative_error(low, fp8_rows_down(x_fp8, x_scale, down)) <= 2 ** -10
        assert low.float().abs().max() > 0.1
