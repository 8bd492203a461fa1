"""One of this pack's FP8 Linears on its own, and a LoRA handed to it the way ComfyUI hands one to an
offloaded or DynamicVRAM layer: for tests and benchmarks of a single layer. Import ComfyUI first
(devtools.comfy_host.import_comfy_in_process)."""
import torch


def fp8_linear(compute_path, weight, bias, dtype=torch.bfloat16):
    """An FP8 Linear of the model's ops class holding `weight` (float, out x in) quantized per
    channel, and `bias`, on weight's device."""
    from sd35_fp8.nodes.ops import make_fp8_ops
    from sd35_fp8.quant.scales import quantize_weight
    out_features, in_features = weight.shape
    layer = make_fp8_ops(compute_path, dtype).Linear(in_features, out_features, device=weight.device, dtype=dtype)
    weight_fp8, scale = quantize_weight(weight)
    layer.load_state_dict({"weight": weight_fp8, "weight_scale": scale, "bias": bias})
    return layer


def lowvram_lora(key, up, down, strength=1.0):
    """A LoRA (up @ down at `strength`) as comfy.model_patcher.LowVramPatch, what ComfyUI puts in a
    layer's weight_lowvram_function (0.33's DynamicVRAM) or weight_function (low VRAM)."""
    import comfy.model_patcher
    import comfy.weight_adapter
    adapter = comfy.weight_adapter.LoRAAdapter(set(), (up, down, None, None, None, None))
    return comfy.model_patcher.LowVramPatch(key, {key: [(strength, adapter, 1.0, None, None)]})
