"""The loader's MMDiT blocks (nodes/block_norm_quantize.py) on this CPU: where no layer takes FP8 rows
(here none: the CPU has no FP8 matmul), each block runs ComfyUI's own methods, so the model computes
bit for bit what ComfyUI's blocks compute, Large and Medium (whose first block has a second
self-attention). tests/gpu/test_norm_quantize.py runs the one-pass path."""
import pytest
import torch

from devtools.numerics import relative_error
from devtools.tiny_sd3 import write_diffusion_model
from tests.nodes.test_loaders import load_diffusion_model, mmdit_output, random_inputs


def comfys_blocks(pack, models_dir, variant, block_class):
    """A tiny model of `variant` through our loader on this CPU, its blocks of block_class (still ComfyUI's
    class), random bf16 inputs and the model's output on them."""
    write_diffusion_model(models_dir / "diffusion_models" / f"{variant}.safetensors", variant=variant,
                          seed=int(torch.randint(0, 10**6, ())))
    model = load_diffusion_model(pack, f"{variant}.safetensors")
    blocks = [m for m in model.model.diffusion_model.modules() if isinstance(m, block_class)]
    # the loader swaps them where the compute path has Triton kernels (a CUDA GPU), here not
    assert blocks and all(type(block) is block_class for block in blocks)
    inputs = {name: value.bfloat16() for name, value in random_inputs().items()}
    return model, blocks, inputs, mmdit_output(model, inputs)


@pytest.mark.parametrize("variant", ["large", "medium"])
def test_blocks_run_comfyuis_methods_where_no_layer_takes_fp8_rows(pack, models_dir, variant):
    from comfy.ldm.modules.diffusionmodules.mmdit import DismantledBlock
    from sd35_fp8.nodes.block_norm_quantize import NormQuantizeBlock, use_norm_quantize_blocks
    model, blocks, inputs, comfys = comfys_blocks(pack, models_dir, variant, DismantledBlock)
    use_norm_quantize_blocks(model.model.diffusion_model)
    assert all(type(block) is NormQuantizeBlock for block in blocks)
    assert torch.equal(mmdit_output(model, inputs), comfys)
    assert any(block.x_block_self_attn for block in blocks) == (variant == "medium")


def test_a_layer_hands_its_input_to_its_models_norm_rows_linear(pack):
    """The row-wise FP8 path's layer calls the model's linear on the one-pass norm's FP8 rows with the input
    itself (a plain function kept on the layer class would be bound to the layer). On this CPU it takes the
    reference norm, and torch._scaled_mm runs here."""
    from sd35_fp8.nodes.ops import make_fp8_ops
    from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
    from sd35_fp8.quant.kernels.norm_quantize import layer_norm_modulate
    from sd35_fp8.quant.scales import quantize_weight
    layer = make_fp8_ops(ComputePath(FP8_ROWWISE, "test", triton_kernels=True), torch.bfloat16).Linear(64, 48)
    x = torch.randn(2, 16, 64).bfloat16()
    shift, scale = (torch.randn(2, 128) * 0.5).bfloat16().chunk(2, dim=1)
    weight = torch.randn(48, 64) * 64 ** -0.5
    weight_fp8, weight_scale = quantize_weight(weight)
    out = layer.norm_rows_linear(x, shift, scale, 1e-6, weight_fp8, weight_scale, None)
    assert out.shape == (32, 48) and out.dtype == torch.bfloat16
    assert relative_error(out, layer_norm_modulate(x, shift, scale, 1e-6).reshape(32, 64) @ weight.t()) <= 0.06
