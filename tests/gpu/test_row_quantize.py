"""Row-wise FP8 quantization in one pass on a real GPU: the Triton kernel on the image tokens of a
joint attention's output (a slice, read in place) at SD3.5's widths against the reference, torch's
checks of its op, and compiled sampling launching it from Inductor's code where rows are wider than
Inductor's one-pass limit. CI has no GPU: every test here skips there
(tests/quant/kernels/test_row_quantize.py runs the kernel under Triton's interpreter)."""
import pytest
import torch

from devtools.numerics import fp8_steps_apart, relative_error
# model: the tiny Medium MMDiT through the diffusion-model loader, on the GPU (a fixture)
from tests.gpu.test_gelu_quantize import COMPILED_BOUND, model  # noqa: F401
from tests.gpu.test_norm_quantize import sample_one_step

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")

KERNEL = "_quantize_rows_kernel"


def image_tokens_of_joint_attention(cols):
    """bf16 (2, 4096, cols): the image tokens after 154 text tokens, magnitudes over six decades, a row of
    zeros and an outlier."""
    joint = torch.randn(2, 4250, cols, device="cuda") * torch.logspace(-3, 3, 4250, device="cuda")[:, None]
    joint[0, 154] = 0
    joint[1, -1, 3] = 1e4
    return joint.bfloat16()[:, 154:]


@pytest.mark.parametrize("cols", [2432, 1536, 9728])  # Large, Medium, an MLP's width
def test_kernel_matches_reference_on_a_slice(cols):
    from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
    from sd35_fp8.quant.kernels.triton_kernels import quantize_rows_triton
    from sd35_fp8.quant.scales import MIN_SCALE
    x = image_tokens_of_joint_attention(cols)
    x_fp8, scale = quantize_rows_triton(x)
    reference, reference_scale = quantize_rows(x)
    torch.testing.assert_close(scale, reference_scale, rtol=1e-6, atol=0)
    assert scale[0] == MIN_SCALE and not x_fp8[0].float().any()
    # Triton's fp32 division may differ from torch's by an ulp, which can move a value across an fp8
    # rounding boundary (tests/gpu/test_fp8_cuda.py)
    assert fp8_steps_apart(x_fp8, reference).max() <= 1
    assert (fp8_steps_apart(x_fp8, reference) > 0).float().mean() <= 1e-2
    assert relative_error(x_fp8.double() * scale, x.reshape(-1, cols)) <= 0.03


def test_the_custom_op_passes_torchs_checks():
    from sd35_fp8.quant.kernels.row_quantize import quantize_rows_op
    torch.library.opcheck(quantize_rows_op().op, (image_tokens_of_joint_attention(1536),))


def test_compiled_sampling_launches_the_kernel_on_rows_wider_than_inductors_limit(model, monkeypatch):
    """The tiny model's 128 columns are within Inductor's one-pass limit, so compiled code keeps
    Inductor's quantization; with the limit below them, compiled code launches the kernel wherever eager
    code calls it, with the eager result."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from sd35_fp8.quant.kernels import row_quantize

    def compiled_step():
        torch._dynamo.reset()
        compiled_model = model.clone()
        set_torch_compile_wrapper(model=compiled_model, backend="inductor")
        return sample_one_step(compiled_model, warm_up=True, kernel=KERNEL)

    eager, eager_calls = sample_one_step(model, kernel=KERNEL)
    assert eager_calls > 0
    assert compiled_step()[1] == 0
    monkeypatch.setattr(row_quantize, "INDUCTOR_ONE_PASS_COLS", 64)
    compiled, compiled_calls = compiled_step()
    print(f"kernel calls eager {eager_calls}, compiled {compiled_calls}; compiled vs eager latent: "
          f"{relative_error(compiled, eager):.5f}")
    assert compiled_calls == eager_calls
    assert relative_error(compiled, eager) <= COMPILED_BOUND
