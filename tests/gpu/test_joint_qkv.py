"""The joint attention's inputs in one pass (quant/kernels/joint_qkv.py, nodes/joint_attention.py) on a
real GPU: the Triton kernel at SD3.5's sizes against the reference, the op through torch's checks, and
the loader's model launching it in every joint block, eager and compiled, against ComfyUI's block mixing.
CI has no GPU: every test here skips there (tests/quant/kernels/test_joint_qkv.py runs the kernel under
Triton's interpreter, tests/nodes/test_joint_qkv_block.py the reference against ComfyUI's)."""
import pytest
import torch

from devtools.numerics import relative_error
# model: the tiny Medium MMDiT through the diffusion-model loader, on the GPU (a fixture)
from tests.gpu.test_gelu_quantize import COMPILED_BOUND, model  # noqa: F401
from tests.gpu.test_norm_quantize import sample_one_step

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")

KERNEL = "_joint_qkv_kernel"
JOINT_BLOCKS = 2  # the tiny Medium MMDiT's


def inputs(heads, context_tokens=154, x_tokens=4096, dtype=torch.bfloat16):
    def qkv(tokens):
        return (torch.randn(2, tokens, 3 * heads * 64, device="cuda") * 3).to(dtype)

    def norm():
        return (torch.rand(64, device="cuda") + 0.5).to(dtype)
    return qkv(context_tokens), qkv(x_tokens), norm(), norm(), norm(), norm()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads", [38, 24])  # Large, Medium
def test_kernel_matches_reference(heads, dtype):
    from sd35_fp8.quant.kernels.joint_qkv import joint_qkv
    from sd35_fp8.quant.kernels.triton_kernels import joint_qkv_triton
    args = inputs(heads, dtype=dtype)
    out = joint_qkv_triton(*args, 64, 1e-6)
    reference = joint_qkv(*args, 64, 1e-6)
    assert out.shape == reference.shape == (3, 2, 154 + 4096, heads * 64)
    assert torch.equal(out[2], reference[2])
    # both compute in fp32 and round once: equal but where the fp32 sums' order tips a rounding
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(out[:2], reference[:2], rtol=ulp, atol=ulp)
    assert (out[:2] != reference[:2]).float().mean() <= 0.01


def test_the_custom_op_passes_torchs_checks():
    from sd35_fp8.quant.kernels.joint_qkv import joint_qkv_op
    checks = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(joint_qkv_op().op, (*inputs(3, 5, 9), 64, 1e-6), test_utils=checks)


def sample_with_comfys_mixing(model):
    """sample_one_step(model, kernel=KERNEL) with ComfyUI's JointBlock for the call."""
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock
    from sd35_fp8.nodes.joint_attention import JointQkvBlock
    blocks = [m for m in model.model.diffusion_model.modules() if isinstance(m, JointBlock)]
    for block in blocks:
        block.__class__ = JointBlock
    try:
        return sample_one_step(model, kernel=KERNEL)
    finally:
        for block in blocks:
            block.__class__ = JointQkvBlock


def test_sampling_runs_the_kernel_in_every_joint_block(model):
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock
    from sd35_fp8.nodes.joint_attention import JointQkvBlock
    blocks = [m for m in model.model.diffusion_model.modules() if isinstance(m, JointBlock)]
    assert len(blocks) == JOINT_BLOCKS and all(type(block) is JointQkvBlock for block in blocks)
    joint, calls = sample_one_step(model, kernel=KERNEL)
    # cond and uncond in one batch: one forward, or two where ComfyUI splits them
    assert calls in (JOINT_BLOCKS, 2 * JOINT_BLOCKS)
    comfys, comfys_calls = sample_with_comfys_mixing(model)
    assert comfys_calls == 0
    difference = relative_error(joint, comfys)
    print(f"one pass against ComfyUI's block mixing (with our q and k norm kernel): {difference:.6f}")
    # the same math in the same order (tile and sums as the q and k norm kernel); an ulp where the sums'
    # order differs can move an FP8 activation by a step downstream
    assert difference <= 0.01


def test_compiled_sampling_runs_the_kernel_too(model):
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    eager, eager_calls = sample_one_step(model, kernel=KERNEL)
    compiled_model = model.clone()
    set_torch_compile_wrapper(model=compiled_model, backend="inductor")
    compiled, compiled_calls = sample_one_step(compiled_model, warm_up=True, kernel=KERNEL)
    print(f"kernel calls eager {eager_calls}, compiled {compiled_calls}; compiled vs eager latent: "
          f"{relative_error(compiled, eager):.5f}")
    assert compiled_calls == eager_calls
    assert relative_error(compiled, eager) <= COMPILED_BOUND
