"""The q and k norms of a loaded SD3.5 become one-pass norms (nodes/qk_norm.py), inside the real ComfyUI
(in-process). The loader does it where the model's compute path has Triton kernels, i.e. on a GPU;
here it is done by hand. On this CPU the norms compute through ComfyUI's code, so the model computes
exactly what it did; the kernel runs on a GPU (tests/gpu/test_head_rms_norm.py) and under Triton's
interpreter (tests/quant/kernels/test_head_rms_norm.py)."""
import pytest
import torch

from devtools.tiny_sd3 import write_diffusion_model
from tests.nodes.test_loaders import load_diffusion_model, mmdit_output, random_inputs


@pytest.mark.parametrize("variant,norms", [("large", 8), ("medium", 10)])
def test_every_qk_norm_changes_class_and_nothing_else(pack, models_dir, variant, norms):
    """Two joint blocks: q and k of both streams of each, and of the second image attention in Medium's first."""
    from comfy.ldm.modules.diffusionmodules.mmdit import RMSNorm
    from sd35_fp8.nodes.qk_norm import OnePassHeadRMSNorm, use_one_pass_qk_norm
    write_diffusion_model(models_dir / "diffusion_models" / f"{variant}.safetensors", variant=variant,
                          seed=int(torch.randint(0, 10**6, ())))
    model = load_diffusion_model(pack, f"{variant}.safetensors")
    diffusion_model = model.model.diffusion_model
    assert not any(isinstance(m, OnePassHeadRMSNorm) for m in diffusion_model.modules())  # no Triton on the CPU
    state_before = {k: v.clone() for k, v in diffusion_model.state_dict().items()}
    inputs = random_inputs()
    before = mmdit_output(model, inputs)
    use_one_pass_qk_norm(diffusion_model)
    assert sum(type(m) is OnePassHeadRMSNorm for m in diffusion_model.modules()) == norms
    assert not any(type(m) is RMSNorm for m in diffusion_model.modules())
    state_after = diffusion_model.state_dict()
    assert state_after.keys() == state_before.keys()
    assert all(torch.equal(state_after[k].view(torch.uint8), v.view(torch.uint8)) for k, v in state_before.items())
    assert torch.equal(mmdit_output(model, inputs), before)


def test_a_joint_block_with_one_pass_norms_compiles_without_graph_breaks(pack, models_dir):
    """Under torch.compile the norms trace ComfyUI's code (Inductor fuses it), in one graph."""
    from comfy.ldm.modules.attention import attention_pytorch
    from sd35_fp8.nodes.qk_norm import use_one_pass_qk_norm
    write_diffusion_model(models_dir / "diffusion_models" / "compiled.safetensors", variant="medium",
                          seed=int(torch.randint(0, 10**6, ())))
    model = load_diffusion_model(pack, "compiled.safetensors")
    use_one_pass_qk_norm(model.model.diffusion_model)
    block = model.model.diffusion_model.joint_blocks[0]
    # ComfyUI's CPU attention asks psutil for free memory, which dynamo cannot trace (test_mlp_gelu.py)
    options = {"optimized_attention_override": lambda attention, *args, **kwargs: attention_pytorch(*args, **kwargs)}
    context, x, c = torch.randn(2, 77, 128), torch.randn(2, 64, 128), torch.randn(2, 128)
    graphs = []

    def keep_graph(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    with torch.no_grad():
        traced = torch.compile(block, fullgraph=True, backend=keep_graph)(context, x, c=c, transformer_options=options)
        eager = block(context, x, c=c, transformer_options=options)
    assert len(graphs) == 1
    for out, expected in zip(traced, eager):
        assert torch.equal(out, expected)
