"""The text conditioning moved to the load device once per sampling run (nodes/conditioning_on_device.py),
inside the real ComfyUI (in-process, CPU): our loaders' models carry the wrapper and their clones keep it,
ComfyUI's sampler runs it once per run with this run's copies of the conditioning, the user's tensors stay
where they were, and the latent is what sampling without it gives. On the GPU, the copies it saves:
tests/gpu/test_conditioning_on_device.py."""
from types import SimpleNamespace

import torch

from devtools.tiny_sd3 import write_diffusion_model
from tests.gpu.test_gelu_quantize import conditioning


def sample(model, positive, negative, steps=2):
    import comfy.sample
    noise = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, 4.5, "euler", "sgm_uniform", positive, negative,
                                   torch.zeros_like(noise), seed=0, disable_pbar=True)


def outer_sample_wrappers(model):
    import comfy.patcher_extension
    return model.get_all_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE)


def test_the_run_gets_its_own_conditioning_on_the_load_device(pack):
    import comfy.patcher_extension
    from sd35_fp8.nodes.conditioning_on_device import conditioning_to_load_device
    users = {"positive": conditioning(1)[0], "negative": conditioning(2)[0]}
    run_entries = {kind: [{"cross_attn": tensor, **options}] for kind, (tensor, options) in users.items()}
    guider = SimpleNamespace(conds=run_entries, model_patcher=SimpleNamespace(load_device=torch.device("meta")))

    def outer_sample(*args):
        return {kind: {name: entries[0][name].device for name in ("cross_attn", "pooled_output")}
                for kind, entries in guider.conds.items()} | {"args": args}

    seen = comfy.patcher_extension.WrapperExecutor.new_class_executor(
        outer_sample, guider, [conditioning_to_load_device]).execute("noise", "latent")
    assert seen["args"] == ("noise", "latent")
    for kind, (tensor, options) in users.items():
        assert seen[kind] == {"cross_attn": torch.device("meta"), "pooled_output": torch.device("meta")}
        assert tensor.device.type == "cpu" and options["pooled_output"].device.type == "cpu"


def test_our_models_sample_with_it_once_per_run_and_the_same_latent(pack, models_dir):
    from sd35_fp8.nodes.conditioning_on_device import WRAPPER_KEY, conditioning_to_load_device
    write_diffusion_model(models_dir / "diffusion_models" / "medium.safetensors", variant="medium",
                          seed=int(torch.randint(0, 10**6, ())))
    model, = pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]().load("medium.safetensors", "fp8_default")
    assert conditioning_to_load_device in outer_sample_wrappers(model)
    sampled = model.clone()  # as LoraLoader and ModelSamplingSD3 hand it on
    assert conditioning_to_load_device in outer_sample_wrappers(sampled)
    runs = []

    def spy(executor, *args, **kwargs):  # inside ours: sees what the sampler will use
        guider = executor.class_obj
        runs.append([(entry["cross_attn"], entry["pooled_output"], guider.model_patcher.load_device)
                     for entries in guider.conds.values() for entry in entries])
        return executor(*args, **kwargs)

    import comfy.patcher_extension
    sampled.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "test_spy", spy)
    positive, negative = conditioning(1), conditioning(2)
    users = [tensor.clone() for tensor in (positive[0][0], positive[0][1]["pooled_output"],
                                           negative[0][0], negative[0][1]["pooled_output"])]
    with_it = sample(sampled, positive, negative, steps=3)
    assert len(runs) == 1 and len(runs[0]) == 2
    for cross_attn, pooled, load_device in runs[0]:
        assert cross_attn.device == load_device and pooled.device == load_device
    assert all(torch.equal(a, b) for a, b in zip(users, (positive[0][0], positive[0][1]["pooled_output"],
                                                         negative[0][0], negative[0][1]["pooled_output"])))
    without = model.clone()
    without.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
    assert conditioning_to_load_device not in outer_sample_wrappers(without)
    torch.testing.assert_close(with_it, sample(without, positive, negative, steps=3), rtol=0, atol=0)
