"""The text conditioning on the GPU once per sampling run (nodes/conditioning_on_device.py), on a real GPU:
ComfyUI's steps no longer copy it from pageable host memory (each such copy waits for the GPU), and the
latent is bit for bit what the per-step copies give. CI has no GPU: this skips there
(tests/nodes/test_conditioning_on_device.py runs the wrapper on the CPU)."""
import pytest
import torch

# model: the tiny Medium MMDiT through the diffusion-model loader, on the GPU (a fixture)
from tests.gpu.test_gelu_quantize import conditioning, model  # noqa: F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; CI has no GPU")

PAGEABLE_COPY = "Memcpy HtoD (Pageable -> Device)"


def sample(model, steps):
    """ComfyUI's sampling with CFG, and how many copies from pageable host memory it made."""
    import comfy.sample
    noise = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        latent = comfy.sample.sample(model, noise, steps, 4.5, "euler", "sgm_uniform", conditioning(1), conditioning(2),
                                     torch.zeros_like(noise), seed=0, disable_pbar=True)
        torch.cuda.synchronize()
    return latent, sum(1 for event in profile.events() if event.name == PAGEABLE_COPY)


def test_steps_no_longer_copy_the_conditioning_from_pageable_memory(model):
    import comfy.patcher_extension
    from sd35_fp8.nodes.conditioning_on_device import WRAPPER_KEY
    per_step = model.clone()
    per_step.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
    sample(model, 1)  # the first run compiles Triton kernels and settles the allocator
    ours_2, ours_copies_2 = sample(model, 2)
    ours_4, ours_copies_4 = sample(model, 4)
    comfys_2, comfys_copies_2 = sample(per_step, 2)
    comfys_4, comfys_copies_4 = sample(per_step, 4)
    print(f"pageable copies at 2 and 4 steps: ours {ours_copies_2}, {ours_copies_4}; "
          f"per step {comfys_copies_2}, {comfys_copies_4}")
    # per step, ComfyUI copies the cross-attention and the pooled conditioning (cond and uncond in one batch)
    assert comfys_copies_4 - comfys_copies_2 >= 2 * 2
    assert ours_copies_4 - ours_copies_2 <= comfys_copies_4 - comfys_copies_2 - 2 * 2
    assert torch.equal(ours_2, comfys_2) and torch.equal(ours_4, comfys_4)
