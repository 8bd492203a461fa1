"""The one-pass q and k norms (nodes/qk_norm.py, quant/kernels/triton_kernels.py) on a real GPU, against
torch's fused rms_norm, which ComfyUI calls. CI has no GPU: every test here skips there."""
import pytest
import torch
import torch.nn.functional as F

from devtools.numerics import relative_error

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
    reason="needs a CUDA GPU that runs Triton (compute capability >= 8.0); CI has no GPU")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens,heads", [(4250, 38), (308, 24), (1, 3)])
def test_kernel_matches_torch_rms_norm_on_the_heads_of_a_qkv_output(tokens, heads, dtype):
    from sd35_fp8.quant.kernels.triton_kernels import head_rms_norm_triton
    qkv = torch.randn(2, tokens, 3 * heads * 64, device="cuda").to(dtype) * 3
    weight = (torch.rand(64, device="cuda") + 0.5).to(dtype)
    for q in qkv.reshape(2, tokens, 3, heads, 64).movedim(2, 0)[:2]:  # q and k, strided views
        out = head_rms_norm_triton(q, weight, 1e-6)
        # both compute in fp32 and round once: equal but where the fp32 sums' order tips a rounding
        reference = F.rms_norm(q, (64,), weight=weight, eps=1e-6)
        ulp = torch.finfo(dtype).eps
        torch.testing.assert_close(out, reference, rtol=ulp, atol=ulp)
        assert (out != reference).float().mean() <= 0.01


def test_loaded_model_runs_its_qk_norms_in_one_pass_and_computes_what_comfyui_does():
    from devtools.comfy_host import import_comfy_in_process
    from devtools.tiny_sd3 import mmdit_state_dict
    import_comfy_in_process()
    import comfy.model_management
    from comfy.ldm.modules.diffusionmodules.mmdit import RMSNorm
    from sd35_fp8.nodes.model_loading import build_fp8_model
    from sd35_fp8.nodes.qk_norm import OnePassHeadRMSNorm
    from sd35_fp8.quant.policy import POLICIES
    weights = mmdit_state_dict("medium", depth=2, prefix="")
    for name in weights:
        if name.endswith((".ln_q.weight", ".ln_k.weight")):
            weights[name] = torch.rand_like(weights[name], dtype=torch.float32).to(weights[name].dtype) + 0.5
    model, _, _ = build_fp8_model(iter(weights.items()), len(weights), 0, "tiny", "tiny", POLICIES["fp8_default"])
    comfy.model_management.load_models_gpu([model])
    diffusion_model = model.model.diffusion_model
    norms = [m for m in diffusion_model.modules() if isinstance(m, RMSNorm)]
    assert len(norms) == 10 and all(type(m) is OnePassHeadRMSNorm for m in norms)
    generator = torch.Generator().manual_seed(0)
    inputs = {"x": torch.randn(2, 16, 32, 32, generator=generator), "timesteps": torch.rand(2, generator=generator) * 1000,
              "context": torch.randn(2, 154, 4096, generator=generator), "y": torch.randn(2, 2048, generator=generator)}
    inputs = {k: v.to("cuda", torch.bfloat16) for k, v in inputs.items()}
    with torch.inference_mode():
        one_pass = diffusion_model(**inputs).float()
        for m in norms:
            m.__class__ = RMSNorm
        comfyui = diffusion_model(**inputs).float()
        for m in norms:
            m.__class__ = OnePassHeadRMSNorm
    # the same math rounded once where torch's also rounds once; what differs (an ulp in a few values)
    # can move an FP8 activation by a step downstream
    assert relative_error(one_pass, comfyui) <= 0.01
