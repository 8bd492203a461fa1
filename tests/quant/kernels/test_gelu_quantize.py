"""GELU + row-wise FP8 quantization before an MLP's fc2: the reference against fp64, the linear that
applies the GELU itself on every compute path (CPU kernels), and the Triton kernel run on the CPU by
Triton's interpreter against the reference (tests/gpu runs it compiled, in bf16 and at SD3.5's sizes)."""

import pytest
import torch
import torch.nn.functional as F

from devtools.numerics import fp8_steps_apart, relative_error
from devtools.triton_interpreter import run_interpreted
from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, FP8_TENSORWISE, WEIGHT_ONLY, ComputePath
from sd35_fp8.quant.kernels.gelu_quantize import GELU_TANH, gelu_quantize_rows, gelu_quantize_rows_op
from sd35_fp8.quant.kernels.linear_dispatch import linear_for
from sd35_fp8.quant.kernels.low_rank import LowRank
from sd35_fp8.quant.scales import MIN_SCALE, absmax_scale, quantize_weight, quantize_with_scale

from .test_fp8_linear import FP8_MATMUL_BOUND, WEIGHT_ONLY_BOUND, layer, scaled_mm_on_cpu  # noqa: F401

# e4m3's 3-bit mantissa: at most 1/16 relative rounding per element, about 2.5% in L2 over a row
# (tests/quant/kernels/test_fp8_linear.py measures the same for plain rows).
ROW_QUANTIZATION_BOUND = 0.03
PATHS = [(WEIGHT_ONLY, WEIGHT_ONLY_BOUND), (FP8_ROWWISE, FP8_MATMUL_BOUND), (FP8_TENSORWISE, FP8_MATMUL_BOUND)]


def gelu_fp64(x):
    return F.gelu(x.double(), approximate="tanh")


def hidden_activations(rows=64, features=256):
    """fc1 outputs: mostly N(0, 1.5), a row of zeros, a row with zeros among its values, a row far
    on the negative side (GELU near 0 there: its abs-max is set by a few values)."""
    x = torch.randn(2, rows // 2, features) * 1.5
    x[0, 1] = 0
    x[0, 2, ::3] = 0
    x[1, 0] = -torch.rand(features) * 4 - 2
    return x


def test_reference_matches_fp64_gelu_row_by_row():
    x = hidden_activations().reshape(-1, 256)
    x_fp8, scale = gelu_quantize_rows(x.bfloat16())
    assert x_fp8.dtype == torch.float8_e4m3fn and scale.shape == (64, 1) and scale.dtype == torch.float32
    gelu = gelu_fp64(x.bfloat16())
    assert scale[1] == MIN_SCALE and not x_fp8[1].float().any()
    assert relative_error(x_fp8.float() * scale, gelu) <= ROW_QUANTIZATION_BOUND
    # zeros among the values; the negative row, scaled to its own tiny abs-max. Each value is the fp64
    # GELU rounded to e4m3 at the row's scale, up to one step where fp32's GELU lands across a rounding
    # boundary (a bound on one row's L2 error would be a statistical one: 256 values exceed 3% at times).
    for row in (2, 32):
        torch.testing.assert_close(scale[row], absmax_scale(gelu[row].abs().amax(0, keepdim=True).float()), rtol=1e-6,
                                   atol=0)
        assert fp8_steps_apart(x_fp8[row], quantize_with_scale(gelu[row], scale[row])).max() <= 1


@pytest.mark.parametrize("triton_kernels", [False, True])  # True: CPU tensors still take the reference
@pytest.mark.parametrize("path, bound", PATHS)
def test_linear_applies_the_gelu_on_every_path(path, bound, triton_kernels):
    weight, bias = layer()
    weight_fp8, scale = quantize_weight(weight)
    compute_path = ComputePath(path, "test", triton_kernels)
    x = hidden_activations()
    out = linear_for(compute_path, GELU_TANH)(x, weight_fp8, scale, bias)
    assert out.shape == (2, 32, 96) and out.dtype == x.dtype
    assert relative_error(out, gelu_fp64(x) @ weight.double().t() + bias.double()) <= bound
    # in fp32 the fused quantization computes what GELU first, then the plain linear, computes
    assert torch.equal(out, linear_for(compute_path)(F.gelu(x, approximate="tanh"), weight_fp8, scale, bias))


@pytest.mark.parametrize("path, bound", PATHS)
def test_a_lora_beside_the_weight_sees_the_gelu(path, bound):
    weight, bias = layer()
    side = LowRank(torch.randn(weight.shape[0], 8) * 0.02, torch.randn(8, weight.shape[1]))
    lora = side.up @ side.down
    weight_fp8, scale = quantize_weight(weight)
    linear = linear_for(ComputePath(path, "test"), GELU_TANH)
    x = hidden_activations()
    expected = gelu_fp64(x) @ (weight + lora).double().t() + bias.double()
    assert relative_error(linear(x, weight_fp8, scale, bias, side), expected) <= bound
    assert relative_error(linear(x, weight_fp8, scale, bias), expected) > 2 * bound, "the LoRA must change the layer"


def test_bf16_input_takes_the_gelu_in_fp32():
    # Unfused, torch rounds the GELU output to bf16 before it is quantized; fused it is not rounded.
    weight, bias = layer()
    weight_fp8, scale = quantize_weight(weight)
    path = ComputePath(FP8_ROWWISE, "test")
    x = hidden_activations().bfloat16()
    fused = linear_for(path, GELU_TANH)(x, weight_fp8, scale, bias.bfloat16())
    unfused = linear_for(path)(F.gelu(x, approximate="tanh"), weight_fp8, scale, bias.bfloat16())
    assert fused.dtype == torch.bfloat16
    assert 0 < relative_error(fused, unfused) <= 0.02


def test_other_activations_are_refused():
    with pytest.raises(ValueError, match="input_activation must be None or 'gelu_tanh'"):
        linear_for(ComputePath(FP8_ROWWISE, "test"), "silu")


def test_custom_op_fake_output():
    from torch._subclasses.fake_tensor import FakeTensorMode
    assert gelu_quantize_rows_op() is gelu_quantize_rows_op()
    op = gelu_quantize_rows_op().op
    with FakeTensorMode():
        x_fp8, scale = op(torch.empty(300, 9728, dtype=torch.bfloat16, device="cuda"))
    assert x_fp8.shape == (300, 9728) and x_fp8.dtype == torch.float8_e4m3fn and x_fp8.is_contiguous()
    assert scale.shape == (300, 1) and scale.dtype == torch.float32


# The interpreter has no bf16: float16 here, bf16 on the GPU. 200 columns: a 128-wide head and a
# 128-wide tail, partly masked (masked lanes must not reach the abs-max); a strided view (rows 300
# apart); 256: a head alone.
_INTERPRETED = """
import pack_import, torch
from devtools.triton_interpreter import use_torch_fp8_rounding
from sd35_fp8.quant.kernels.triton_kernels import gelu_quantize_rows_triton
use_torch_fp8_rounding()
generator = torch.Generator().manual_seed(0)
wide = torch.randn(8, 300, generator=generator) * 2
wide[1] = 0
wide[2, ::4] = 0
wide[3] = -wide[3].abs() - 1.5
wide[4] *= 40
inputs = [wide.half()[:, :200], wide.half()[:, :200].contiguous(), wide.half()[:, :256].contiguous()]
torch.save([(x, *gelu_quantize_rows_triton(x)) for x in inputs], {path!r})
"""


def test_interpreted_kernel_matches_reference(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED.format(path=str(path)), timeout=300)
    for x, x_fp8, scale in torch.load(path):
        reference, reference_scale = gelu_quantize_rows(x)
        torch.testing.assert_close(scale, reference_scale, rtol=1e-6, atol=0)
        assert scale[1] == MIN_SCALE and not x_fp8[1].float().any()
        others = [0, 2, 4, 5, 6, 7]
        assert torch.equal(x_fp8[others].view(torch.uint8), reference[others].view(torch.uint8))
        # Row 3 lies at x < -1.5, where torch's 1 + tanh(u) cancels to a few bits and the
        # kernel's x * sigmoid(2u) does not; the row's abs-max is that small, so it shows in fp8:
        # one step apart at 2 of 200 values (measured), the kernel the closer to fp64.
        assert fp8_steps_apart(x_fp8[3], reference[3]).max() <= 1
        gelu = gelu_fp64(x[3])
        kernel_error = relative_error(x_fp8[3].float() * scale[3], gelu)
        assert kernel_error <= relative_error(reference[3].float() * scale[3], gelu)
