"""The text conditioning on the GPU once per sampling run, not copied there at every step.

ComfyUI keeps CLIPTextEncode's output on the CPU and, at every step, concatenates the positive and
negative conditioning there and copies the result to the GPU from pageable memory (comfy/samplers.py
_calc_cond_batch, comfy/model_base.py _apply_model): about 5 MB a step at SD3.5's 154 x 4096 tokens,
and a copy from pageable memory waits for the GPU to finish the step before. The host then cannot
queue the next step while the GPU works, which is what a step replayed as a CUDA graph leaves it free
to do (bench/analysis.md, "Twelfth session").

An OUTER_SAMPLE wrapper (ComfyUI's patcher_extension, 0.3.75 and 0.33) on our models moves the run's
own copies of the conditioning tensors to the model's load device before sampling starts; the
user's conditioning, which ComfyUI caches between runs, keeps its CPU tensors.
"""
import comfy.patcher_extension

WRAPPER_KEY = "sd35_fp8_conditioning_on_device"
# What SD3's extra_conds reads from a conditioning entry (comfy/model_base.py SD3)
TEXT_CONDITIONING = ("cross_attn", "pooled_output")


def keep_conditioning_on_device(model_patcher):
    """Installs the wrapper on a ComfyUI ModelPatcher (its clones copy it)."""
    model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                       conditioning_to_load_device)


def conditioning_to_load_device(executor, *args, **kwargs):
    guider = executor.class_obj
    device = guider.model_patcher.load_device
    # guider.conds holds this run's shallow copies of the user's entries (CFGGuider.sample):
    # replacing a tensor in one leaves the user's entry as it was
    for entries in guider.conds.values():
        for entry in entries:
            for name in TEXT_CONDITIONING:
                tensor = entry.get(name)
                if tensor is not None and tensor.device != device:
                    entry[name] = tensor.to(device)
    return executor(*args, **kwargs)
