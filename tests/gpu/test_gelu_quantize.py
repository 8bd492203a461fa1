"""GELU + row-wise FP8 quantization before an MLP's fc2 on a real GPU: the Triton kernel at SD3.5's
sizes against the plain-torch reference, and the loader's model running it in every MLP, eager and
under torch.compile (ComfyUI's TorchCompileModel). CI has no GPU: every test here skips there
(tests/quant/kernels/test_gelu_quantize.py runs the kernel under Triton's interpreter)."""
import pytest
import torch

from devtools.numerics import fp8_steps_apart, relative_error

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9); CI has no GPU")

# compiled, Inductor launches it from its own code, where it may carry a suffix
KERNEL = "_gelu_quantize_rows_kernel"
MLPS = 3  # tiny Medium: two joint blocks, block 1's context stream pre-only
# Inductor keeps norm/modulate intermediates in fp32 where eager rounds them to bf16
# (tests/gpu/test_fp8_attention_model.py, tests/gpu/test_fp8_cuda.py).
COMPILED_BOUND = 0.04


def fc1_outputs(rows, cols):
    """bf16 rows as fc1 writes them (N(0, 1.5)), with a row of zeros, a row with large values, a row
    far on the negative side where GELU underflows to -0."""
    x = torch.randn(rows, cols, device="cuda") * 1.5
    x[0] = 0
    x[1, ::7] = 0
    x[2] *= 100
    x[3] = -x[3].abs() - 20
    return x.bfloat16()


@pytest.mark.parametrize("rows, cols", [(8500, 9728), (8500, 6144), (7, 200)])  # Large, Medium; a partial block
def test_kernel_matches_reference(rows, cols):
    from sd35_fp8.quant.kernels.gelu_quantize import gelu_quantize_rows
    from sd35_fp8.quant.kernels.triton_kernels import gelu_quantize_rows_triton
    from sd35_fp8.quant.scales import MIN_SCALE
    x = fc1_outputs(rows, cols)
    x_fp8, scale = gelu_quantize_rows_triton(x)
    reference, reference_scale = gelu_quantize_rows(x)
    torch.testing.assert_close(scale, reference_scale, rtol=1e-6, atol=0)
    assert scale[0] == MIN_SCALE and scale[3] == MIN_SCALE and not x_fp8[[0, 3]].float().any()
    # the kernel's x * sigmoid(2u) and fp32 division against torch's tanh form: a few fp32 ulps,
    # which can move a value across an fp8 rounding boundary, by one step
    assert fp8_steps_apart(x_fp8, reference).max() <= 1
    assert (x_fp8.view(torch.uint8) != reference.view(torch.uint8)).float().mean() <= 1e-3
    gelu = torch.nn.functional.gelu(x.double(), approximate="tanh")
    assert relative_error(x_fp8.double() * scale, gelu) <= 0.03


def test_the_custom_op_passes_torchs_checks():
    from sd35_fp8.quant.kernels.gelu_quantize import gelu_quantize_rows_op
    torch.library.opcheck(gelu_quantize_rows_op().op, (fc1_outputs(300, 1536),))


def tiny_medium_models(tmp_path_factory, *attentions):
    """The tiny Medium MMDiT through the diffusion-model loader, once for each `attention` input given."""
    from devtools.comfy_host import import_comfy_in_process
    from devtools.tiny_sd3 import write_diffusion_model
    pack = import_comfy_in_process()
    import folder_paths
    folder = tmp_path_factory.mktemp("diffusion_models")
    folder_paths.add_model_folder_path("diffusion_models", str(folder), is_default=True)
    write_diffusion_model(folder / "tiny_medium.safetensors", variant="medium")
    loader = pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]()
    return [loader.load("tiny_medium.safetensors", "fp8_default", attention=attention)[0] for attention in attentions]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny Medium MMDiT through the diffusion-model loader, on the GPU, with ComfyUI's attention: the
    tests that compare our blocks with ComfyUI's hold attention out, as FP8 attention's per-row
    quantization of q turns an ulp between the two into FP8 steps (tests/gpu/test_fp8_attention.py
    runs the loader's default)."""
    model, = tiny_medium_models(tmp_path_factory, "bf16")
    import comfy.model_management
    comfy.model_management.load_models_gpu([model])
    return model


def conditioning(seed):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 4096, generator=generator) * 0.5,
             {"pooled_output": torch.randn(1, 2048, generator=generator) * 0.5}]]


def sample_one_step(model):
    """One euler step of ComfyUI's own sampling with CFG (64 image tokens), and how often the kernel
    ran in it. A first, uncounted run compiles."""
    import comfy.sample
    noise = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))

    def run():
        return comfy.sample.sample(model, noise, 1, 4.5, "euler", "sgm_uniform", conditioning(1), conditioning(2),
                                   torch.zeros_like(noise), seed=0, disable_pbar=True)

    run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        latent = run()
        torch.cuda.synchronize()
    return latent.float(), sum(1 for event in profile.events() if event.name.startswith(KERNEL))


def test_sampling_runs_the_kernel_before_every_fc2_eager_and_compiled(model):
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from sd35_fp8.quant.kernels.gelu_quantize import GELU_TANH
    fc2_layers = [m.fc2 for m in model.model.diffusion_model.modules() if hasattr(m, "fc2")]
    assert len(fc2_layers) == MLPS and all(layer.input_activation == GELU_TANH for layer in fc2_layers)
    eager, eager_calls = sample_one_step(model)
    # cond and uncond in one batch: one forward, or two where ComfyUI splits them
    assert eager_calls in (MLPS, 2 * MLPS)
    compiled_model = model.clone()
    set_torch_compile_wrapper(model=compiled_model, backend="inductor")
    compiled, compiled_calls = sample_one_step(compiled_model)
    assert compiled_calls == eager_calls
    assert relative_error(compiled, eager) <= COMPILED_BOUND
    # the GELU back in the MLPs, as ComfyUI builds them: torch's GELU in bf16, then the plain quantization
    for mlp in (m for m in model.model.diffusion_model.modules() if hasattr(m, "fc2")):
        mlp.act, mlp.fc2.input_activation = torch.nn.GELU(approximate="tanh"), None
    try:
        unfused, unfused_calls = sample_one_step(model)
    finally:
        for mlp in (m for m in model.model.diffusion_model.modules() if hasattr(m, "fc2")):
            mlp.act, mlp.fc2.input_activation = torch.nn.Identity(), GELU_TANH
    assert unfused_calls == 0
    print(f"fused vs unfused latent: {relative_error(eager, unfused):.5f}, compiled vs eager: "
          f"{relative_error(compiled, eager):.5f}")
    assert relative_error(eager, unfused) <= 0.02
