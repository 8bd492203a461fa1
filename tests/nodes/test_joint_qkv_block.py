"""The joint blocks (nodes/joint_attention.py) on this CPU: the one-pass kernel's reference
(quant/kernels/joint_qkv.py) is what ComfyUI's block mixing hands its attention, and where the blocks'
layers take no FP8 rows (here none: the CPU has no FP8 matmul) each joint block is ComfyUI's, bit for
bit. tests/gpu/test_joint_qkv.py runs the kernel in the model."""
import pytest
import torch

from tests.nodes.test_block_norm_quantize import comfys_blocks
from tests.nodes.test_loaders import mmdit_output


def test_the_reference_is_what_comfyuis_block_mixing_attends_to(pack):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import SelfAttention
    from sd35_fp8.quant.kernels.joint_qkv import joint_qkv
    generator = torch.Generator().manual_seed(0)
    attentions = [SelfAttention(3 * 64, num_heads=3, qkv_bias=True, qk_norm="rms", dtype=torch.bfloat16,
                                operations=comfy.ops.disable_weight_init) for _ in range(2)]
    for attention in attentions:
        attention.qkv.weight.data = (torch.randn(3 * 192, 192, generator=generator) * 192 ** -0.5).bfloat16()
        attention.qkv.bias.data = (torch.randn(3 * 192, generator=generator) * 0.1).bfloat16()
        for norm in (attention.ln_q, attention.ln_k):
            norm.weight.data = (torch.rand(64, generator=generator) + 0.5).bfloat16()
    streams = [torch.randn(2, tokens, 3 * 64, generator=generator).bfloat16() for tokens in (7, 12)]
    with torch.inference_mode():
        # ComfyUI's SelfAttention.pre_attention and _block_mixing's concatenation
        context, x = (attention.pre_attention(stream) for attention, stream in zip(attentions, streams))
        expected = [torch.cat((context[t], x[t]), dim=1) for t in range(3)]
        qkv = [attention.qkv(stream) for attention, stream in zip(attentions, streams)]
        out = joint_qkv(*qkv, attentions[0].ln_q.weight, attentions[0].ln_k.weight, attentions[1].ln_q.weight,
                        attentions[1].ln_k.weight, 64, attentions[0].ln_q.eps)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    assert torch.equal(out[2], expected[2].flatten(2))  # ComfyUI's v keeps its heads apart: the same values


@pytest.mark.parametrize("variant", ["large", "medium"])
def test_joint_blocks_are_comfyuis_where_no_layer_takes_fp8_rows(pack, models_dir, variant):
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock
    from sd35_fp8.nodes.block_norm_quantize import use_norm_quantize_blocks
    from sd35_fp8.nodes.joint_attention import JointQkvBlock, use_joint_qkv_blocks
    model, blocks, inputs, comfys = comfys_blocks(pack, models_dir, variant, JointBlock)
    use_norm_quantize_blocks(model.model.diffusion_model)
    use_joint_qkv_blocks(model.model.diffusion_model)
    assert all(type(block) is JointQkvBlock for block in blocks)
    assert torch.equal(mmdit_output(model, inputs), comfys)
