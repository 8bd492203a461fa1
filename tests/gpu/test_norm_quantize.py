"""The block's layer norm + modulation + FP8 quantization in one pass on a real GPU: the Triton kernel
at SD3.5 Large's size against the plain-torch reference, and the loader's model running it before
every qkv and fc1 in eager sampling, against ComfyUI's blocks. CI has no GPU: every test here skips
there (tests/quant/kernels/test_norm_quantize.py runs the kernel under Triton's interpreter)."""
import pytest
import torch

from devtools.numerics import fp8_steps_apart, relative_error
# model: the tiny Medium MMDiT through the diffusion-model loader, on the GPU (a fixture)
from tests.gpu.test_gelu_quantize import COMPILED_BOUND, conditioning, model  # noqa: F401

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")

KERNEL = "_layer_norm_modulate_quantize_rows_kernel"
# tiny Medium: block 0 with its second self-attention (qkv, qkv2 and fc1 on the image stream; qkv and fc1
# on the context stream), block 1 (image: qkv, fc1; context pre-only: qkv)
FUSED_PER_FORWARD = 3 + 2 + 2 + 1
# a LoRA's columns from the FP8 rows (quant/kernels/low_rank_rows.py, low_rank_columns.py), or its down
# projection of them for the epilogue GEMM where the columns would widen the tiny model's 128 inputs by more
# than low_rank_columns.MAX_COLUMNS_PER_INPUT
LORA_KERNEL = ("_fp8_rows_columns_kernel", "_fp8_rows_down_kernel")
# devtools/random_lora.py's LoRA on every joint block's qkv and fc1: all of the above but qkv2
LORA_LAYERS_PER_FORWARD = FUSED_PER_FORWARD - 1


@pytest.mark.parametrize("channels", [2432, 1536])  # Large, Medium
def test_kernel_matches_reference(channels):
    from sd35_fp8.quant.kernels.norm_quantize import layer_norm_modulate_quantize_rows
    from sd35_fp8.quant.kernels.triton_kernels import layer_norm_modulate_quantize_rows_triton
    x = (torch.randn(2, 4096, channels, device="cuda") * 4 + torch.randn(2, 4096, 1, device="cuda") * 10).bfloat16()
    shift, scale = (torch.randn(2, 6 * channels, device="cuda") * 0.5).bfloat16().chunk(6, dim=1)[:2]
    x_fp8, x_scale = layer_norm_modulate_quantize_rows_triton(x, shift, scale, 1e-6)
    reference, reference_scale = layer_norm_modulate_quantize_rows(x, shift, scale, 1e-6)
    torch.testing.assert_close(x_scale, reference_scale, rtol=1e-5, atol=0)
    assert fp8_steps_apart(x_fp8, reference).max() <= 1
    assert (fp8_steps_apart(x_fp8, reference) > 0).float().mean() <= 1e-3


@pytest.mark.parametrize("channels", [2432, 1536])  # Large, Medium
def test_rows_with_a_loras_columns_match_the_norm_and_the_reference(channels):
    """The op that leaves room after the norm's rows for a LoRA's columns and writes them there: the same rows
    and scales as the norm alone, columns within one FP8 step of the reference computed from those rows, and the
    weight joined with the LoRA's up columns as torch.cat joins them."""
    from sd35_fp8.quant.kernels.low_rank_columns import rank_columns
    from sd35_fp8.quant.kernels.low_rank_rows import fp8_rows_columns
    from sd35_fp8.quant.kernels.norm_quantize import layer_norm_modulate_quantize_rows_columns_op
    from sd35_fp8.quant.kernels.triton_kernels import layer_norm_modulate_quantize_rows_triton
    from sd35_fp8.quant.scales import quantize_weight
    x = (torch.randn(2, 4096, channels, device="cuda") * 4 + torch.randn(2, 4096, 1, device="cuda") * 10).bfloat16()
    shift, scale = (torch.randn(2, 6 * channels, device="cuda") * 0.5).bfloat16().chunk(6, dim=1)[:2]
    weight_fp8, weight_scale = quantize_weight(torch.randn(7296, channels, device="cuda") * channels ** -0.5)
    up, down = torch.randn(7296, 16, device="cuda") * 0.03, (torch.randn(16, channels, device="cuda") * 0.03).bfloat16()
    columns = rank_columns(up, down.float(), weight_scale)
    spread = columns.spread
    op = layer_norm_modulate_quantize_rows_columns_op()
    x_ext, x_scale, joined = op(x, shift, scale, 1e-6, down, spread, weight_fp8, columns.up_fp8)
    rows, rows_scale = layer_norm_modulate_quantize_rows_triton(x, shift, scale, 1e-6)
    assert x_ext.shape == (2 * 4096, channels + spread.shape[1])
    assert torch.equal(joined.view(torch.uint8), torch.cat([weight_fp8, columns.up_fp8], dim=1).view(torch.uint8))
    assert torch.equal(x_ext[:, :channels].contiguous().view(torch.uint8), rows.view(torch.uint8))
    assert torch.equal(x_scale, rows_scale)
    reference = fp8_rows_columns(rows, down, spread)
    apart = fp8_steps_apart(x_ext[:, channels:].contiguous(), reference[:, channels:].contiguous())
    # TF32 spreading, as tests/gpu/test_low_rank_rows.py's columns kernel test allows
    assert apart.max() <= 1 and (apart > 0).float().mean() <= 0.02
    assert reference[:, channels:].float().abs().max() > 1  # the columns carry the LoRA
    checks = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(op.op, (x, shift, scale, 1e-6, down, spread, weight_fp8, columns.up_fp8), test_utils=checks)


@pytest.mark.parametrize("channels", [2432, 1536])  # Large, Medium
def test_rows_with_a_loras_down_projection_match_the_norm_and_the_projection(channels):
    """The op for the context stream's few rows (2 x 154 tokens): the norm's rows and scales, and the LoRA's down
    projection of those rows in the same launch, as the down kernel computes it from them."""
    from sd35_fp8.quant.kernels.low_rank_rows import fp8_rows_down
    from sd35_fp8.quant.kernels.norm_quantize import layer_norm_modulate_quantize_rows_down_op
    from sd35_fp8.quant.kernels.triton_kernels import layer_norm_modulate_quantize_rows_triton
    x = (torch.randn(2, 154, channels, device="cuda") * 4 + torch.randn(2, 154, 1, device="cuda") * 10).bfloat16()
    shift, scale = (torch.randn(2, 6 * channels, device="cuda") * 0.5).bfloat16().chunk(6, dim=1)[:2]
    op = layer_norm_modulate_quantize_rows_down_op()
    for rank in (16, 6):
        down = (torch.randn(rank, channels, device="cuda") * 0.03).bfloat16()
        x_fp8, x_scale, low = op(x, shift, scale, 1e-6, down)
        rows, rows_scale = layer_norm_modulate_quantize_rows_triton(x, shift, scale, 1e-6)
        # the norm alone runs in fewer warps, which sum in another order: scales a few ulps apart, values on a
        # rounding boundary one FP8 step apart
        torch.testing.assert_close(x_scale, rows_scale, rtol=1e-5, atol=0)
        assert fp8_steps_apart(x_fp8, rows).max() <= 1 and (fp8_steps_apart(x_fp8, rows) > 0).float().mean() <= 1e-3
        assert low.shape == (2 * 154, rank) and low.dtype == torch.bfloat16
        # from the op's own rows: the same fp32 sums up to their order, bf16 output rounding apart
        assert relative_error(low, fp8_rows_down(x_fp8, x_scale, down)) <= 2 ** -8
        checks = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
        torch.library.opcheck(op.op, (x, shift, scale, 1e-6, down), test_utils=checks)


def sample_one_step(model, warm_up=False, kernel=KERNEL):
    """One euler step of ComfyUI's own sampling with CFG (64 image tokens), and how often `kernel` ran
    in it; warm_up: after a first, uncounted run (which compiles)."""
    import comfy.sample
    noise = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))

    def run():
        return comfy.sample.sample(model, noise, 1, 4.5, "euler", "sgm_uniform", conditioning(1), conditioning(2),
                                   torch.zeros_like(noise), seed=0, disable_pbar=True)

    if warm_up:
        run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        latent = run()
        torch.cuda.synchronize()
    # compiled code launches the kernel under its own name with a suffix
    return latent.float(), sum(1 for event in profile.events() if event.name.startswith(kernel))


def sample_with_comfys_blocks(model):
    """sample_one_step with the model's blocks running ComfyUI's own methods for the call."""
    from comfy.ldm.modules.diffusionmodules.mmdit import DismantledBlock
    from sd35_fp8.nodes.block_norm_quantize import NormQuantizeBlock
    blocks = [m for m in model.model.diffusion_model.modules() if isinstance(m, DismantledBlock)]
    for block in blocks:
        block.__class__ = DismantledBlock
    try:
        return sample_one_step(model)
    finally:
        for block in blocks:
            block.__class__ = NormQuantizeBlock


def test_sampling_runs_the_kernel_before_every_qkv_and_fc1(model):
    import nodes
    from comfy.ldm.modules.diffusionmodules.mmdit import DismantledBlock
    from sd35_fp8.nodes.block_norm_quantize import NormQuantizeBlock
    blocks = [m for m in model.model.diffusion_model.modules() if isinstance(m, DismantledBlock)]
    assert blocks and all(type(block) is NormQuantizeBlock for block in blocks)
    fused, calls = sample_one_step(model)
    # cond and uncond in one batch: one forward, or two where ComfyUI splits them
    assert calls in (FUSED_PER_FORWARD, 2 * FUSED_PER_FORWARD)
    comfys, comfys_calls = sample_with_comfys_blocks(model)
    assert comfys_calls == 0
    # the same file through stock ComfyUI's loader, unquantized: the reference both are held to
    reference, _ = sample_one_step(nodes.UNETLoader().load_unet("tiny_medium.safetensors", "default")[0])
    fused_error, comfys_error = relative_error(fused, reference), relative_error(comfys, reference)
    print(f"against the unquantized model: one pass {fused_error:.5f}, ComfyUI's blocks {comfys_error:.5f}; "
          f"one pass vs ComfyUI's blocks {relative_error(fused, comfys):.5f}")
    # The same math, where ComfyUI's blocks round the normalized and modulated values to bf16 before
    # quantizing them, so some land on the other fp8 step (0.027 apart on an H200): no further from
    # the unquantized model than ComfyUI's blocks are, up to that rounding noise.
    assert fused_error <= 1.25 * comfys_error


def assert_as_close_as(latent, other, lora, load_lora, what):
    """latent no further than other from the same file through stock ComfyUI's loader, unquantized, with lora
    applied by load_lora (comfy.sd's): as in test_sampling_runs_the_kernel_before_every_qkv_and_fc1, up to the
    rounding noise between our one-pass blocks and ComfyUI's; a LoRA left out would land near its effect."""
    import nodes
    stock = nodes.UNETLoader().load_unet("tiny_medium.safetensors", "default")[0]
    reference, _ = sample_one_step(load_lora(stock, None, lora, 1.0, 0)[0])
    lora_effect = relative_error(reference, sample_one_step(stock)[0])
    error, other_error = relative_error(latent, reference), relative_error(other, reference)
    print(f"{what} (LoRA effect {lora_effect:.4f}) against the unquantized model with the LoRA: {error:.5f}, "
          f"the other {other_error:.5f}")
    assert lora_effect > 0.05, "the LoRA must change the output clearly"
    assert error <= 1.25 * other_error


def test_a_lora_keeps_the_one_pass_blocks(model):
    """With a LoRA beside qkv's and fc1's FP8 weights, the blocks still take their input from the one-pass
    kernel, the LoRA its down projection from the same FP8 rows; no further from the unquantized model with
    the same LoRA than ComfyUI's blocks are (which quantize the LoRA'd layers' input apart)."""
    import comfy.sd
    from devtools.random_lora import random_lora
    lora = random_lora(model.model.diffusion_model.state_dict(), seed=int(torch.randint(0, 10**6, ())), std=0.08)
    with_lora = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0]
    fused, calls = sample_one_step(with_lora)
    _, down_calls = sample_one_step(with_lora, kernel=LORA_KERNEL)
    assert calls in (FUSED_PER_FORWARD, 2 * FUSED_PER_FORWARD)
    assert down_calls in (LORA_LAYERS_PER_FORWARD, 2 * LORA_LAYERS_PER_FORWARD)
    comfys, comfys_calls = sample_with_comfys_blocks(with_lora)
    assert comfys_calls == 0
    assert_as_close_as(fused, comfys, lora, comfy.sd.load_lora_for_models, "one pass, ComfyUI's blocks the other")


def test_compiled_sampling_runs_the_kernel_too(model):
    """Under TorchCompileModel the blocks launch the same kernel from compiled code, in place of
    Inductor's fusion of norm, modulation and quantization (three reads of each row)."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    eager, eager_calls = sample_one_step(model)
    compiled_model = model.clone()
    set_torch_compile_wrapper(model=compiled_model, backend="inductor")
    compiled, compiled_calls = sample_one_step(compiled_model, warm_up=True)
    print(f"kernel calls eager {eager_calls}, compiled {compiled_calls}; compiled vs eager latent: "
          f"{relative_error(compiled, eager):.5f}")
    assert compiled_calls == eager_calls
    assert relative_error(compiled, eager) <= COMPILED_BOUND


def test_layers_under_a_bypass_lora_take_comfyuis_input(model):
    """ComfyUI 0.33's bypass LoRA replaces each targeted layer's forward with one that adds the LoRA's output,
    computed from the layer's input: those layers must not take FP8 rows from the block's one-pass norm (the
    LoRA would be skipped) nor apply their MLP's GELU themselves (the LoRA would see its input). With one on
    every qkv, fc1 and fc2, no block runs the kernel, and the model is as close to the unquantized model with the
    same bypass LoRA as with that LoRA through LoraLoader."""
    import comfy.sd
    from devtools.random_lora import random_lora
    if not hasattr(comfy.sd, "load_bypass_lora_for_models"):
        pytest.skip("this ComfyUI has no bypass LoRA (0.33 has)")
    lora = random_lora(model.model.diffusion_model.state_dict(), seed=int(torch.randint(0, 10**6, ())), std=0.08,
                       targets=(".attn.qkv.weight", ".mlp.fc1.weight", ".mlp.fc2.weight"))
    bypassed, calls = sample_one_step(comfy.sd.load_bypass_lora_for_models(model, None, lora, 1.0, 0)[0])
    beside, _ = sample_one_step(comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0])
    assert calls == 0
    assert_as_close_as(bypassed, beside, lora, comfy.sd.load_bypass_lora_for_models,
                       "bypass LoRA, the same LoRA through LoraLoader the other")


def with_weight_wrappers(model, _clip, factors, _strength_model, _strength_clip):
    """model with each LoRA of `factors` ({weight key: (up, down)}) as a function ComfyUI hands the layer's
    weight to at every call (ModelPatcher.add_weight_wrapper), the way LoRA training without bypass mode
    attaches its adapters; shaped like comfy.sd.load_lora_for_models."""
    wrapped = model.clone()
    for key, (up, down) in factors.items():
        wrapped.add_weight_wrapper(key, lambda weight, up=up, down=down: weight + (up @ down).to(weight))
    return wrapped, None


def test_layers_with_weight_adapters_take_the_dequantized_weight(model):
    """LoRA training without bypass mode hands each layer's weight to its adapter, which needs it in the compute
    dtype and the gradient through it: those layers compute from the dequantized weight, so take no FP8 rows from
    the block's one-pass norm. With an adapter on every qkv and fc1, no block runs the kernel, and the model is
    as close to the unquantized model with the same adapters as with the same LoRA through LoraLoader."""
    import comfy.sd
    generator = torch.Generator().manual_seed(int(torch.randint(0, 10**6, ())))
    factors, lora = {}, {}
    for name, weight in model.model.diffusion_model.state_dict().items():
        if name.startswith("joint_blocks.") and name.endswith((".attn.qkv.weight", ".mlp.fc1.weight")):
            up, down = (torch.randn(shape, generator=generator) * 0.08 for shape in ((weight.shape[0], 16),
                                                                                     (16, weight.shape[1])))
            factors["diffusion_model." + name] = (up.cuda(), down.cuda())
            key = "lora_unet_" + name[: -len(".weight")].replace(".", "_")
            lora[key + ".lora_up.weight"], lora[key + ".lora_down.weight"] = up, down
    adapted, calls = sample_one_step(with_weight_wrappers(model, None, factors, 1.0, 0)[0])
    beside, _ = sample_one_step(comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0])
    assert calls == 0
    assert_as_close_as(adapted, beside, factors, with_weight_wrappers,
                       "weight adapters, the same LoRA through LoraLoader the other")
