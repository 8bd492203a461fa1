"""TorchCompileModel with CUDA graphs on our model: it compiles a copy and samples what eager samples.
On the CPU Inductor records no CUDA graphs (it skips them for CPU tensors); tests/gpu/dynamic_vram_compile.py
checks on a GPU that the graphs are recorded and replayed."""
import torch

from devtools.numerics import relative_error
from devtools.tiny_sd3 import write_diffusion_model

# Compiled, Inductor keeps the norm and modulation intermediates in fp32 where eager rounds them to
# bf16, as in tests/gpu/test_dynamic_vram_compile.py
COMPILED_BOUND = 0.04


def test_node_compiles_a_copy_that_samples_what_eager_samples(pack, models_dir):
    import comfy.sample
    from comfy_api.torch_helpers.torch_compile import TORCH_COMPILE_KWARGS
    write_diffusion_model(models_dir / "diffusion_models" / "medium.safetensors", variant="medium",
                          seed=int(torch.randint(0, 10**6, ())))
    model, = pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]().load("medium.safetensors", "fp8_default")
    compiled, = pack.NODE_CLASS_MAPPINGS["SD35FP8CompileCudaGraphs"]().compile(model)
    assert compiled is not model and TORCH_COMPILE_KWARGS not in model.model_options
    assert compiled.model_options[TORCH_COMPILE_KWARGS]["options"]["triton.cudagraphs"]
    generator = torch.Generator().manual_seed(0)
    positive, negative = ([[torch.randn(1, 77, 4096, generator=generator) * 0.5,
                            {"pooled_output": torch.randn(1, 2048, generator=generator) * 0.5}]] for _ in range(2))
    latent = torch.zeros(1, 16, 16, 16)
    noise = torch.randn(latent.shape, generator=generator)

    def sample(patcher):
        with torch.inference_mode():
            return comfy.sample.sample(patcher, noise, 2, 4.5, "euler", "sgm_uniform", positive, negative, latent,
                                       seed=0, disable_pbar=True)
    eager = sample(model)
    assert relative_error(sample(compiled), eager) <= COMPILED_BOUND
