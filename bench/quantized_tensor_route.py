"""What ComfyUI's own QuantizedTensor does with a per-channel FP8 weight like ours (issue 9, point 5: carry
our weight as a layout of ComfyUI's QuantizedTensor instead of our own ops). In-process, on the CPU, with the
ComfyUI of $SD35FP8_COMFYUI (0.3.75: its in-tree comfy/quant_ops.py; 0.33: comfy_kitchen's):

- stock's mixed-precision Linear loading our tensors (fp8 weight, (out, 1) weight_scale) as its
  float8_e4m3fn format: the scale it keeps, and its output against the dequantized reference, with stock's
  full-precision matmul and with its FP8 matmul;
- F.linear on such a weight outside inference mode (no_grad), where torch splits it into t() and mm;
- a LoRA merged by ComfyUI's ModelPatcher: the scale the weight has after it (ComfyUI requantizes a merged
  weight with a new per-tensor scale) and the error against the exact patched weight, beside what one
  rounding to per-channel FP8 costs; this pack keeps the LoRA beside the weight (exact by construction);
- whether ModelPatcher.get_key_patches (ModelMergeSimple, ModelSubtract) takes such a model.

  source .host/env && $SD35FP8_PYTHON bench/quantized_tensor_route.py --out OUT.json
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

OUT_FEATURES, IN_FEATURES, RANK = 64, 32, 4
# one channel twenty times wider than the rest, as LoRAs and real weights make some
WIDE_CHANNEL = 5


def import_comfy():
    sys.path.insert(0, os.environ["SD35FP8_COMFYUI"])
    import comfy.options
    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args
    args.cpu = True


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def per_channel_fp8(weight):
    scale = weight.abs().amax(dim=1, keepdim=True).float() / torch.finfo(torch.float8_e4m3fn).max
    return (weight / scale).to(torch.float8_e4m3fn), scale


def stock_fp8_linear(weight_fp8, weight_scale, full_precision_mm):
    """Stock's mixed-precision Linear holding weight_fp8 with weight_scale as its float8_e4m3fn format."""
    import comfy.ops
    is_033 = "comfy_kitchen" in sys.modules
    layers = {} if is_033 else {"linear": {"format": "float8_e4m3fn"}}
    ops = comfy.ops.mixed_precision_ops(layers, torch.float32, full_precision_mm=full_precision_mm)
    module = torch.nn.Module()
    module.linear = ops.Linear(IN_FEATURES, OUT_FEATURES, bias=True)
    state_dict = {"linear.weight": weight_fp8, "linear.weight_scale": weight_scale,
                  "linear.bias": torch.zeros(OUT_FEATURES)}
    if is_033:
        # 0.33 reads a layer's format from a comfy_quant tensor beside it
        state_dict["linear.comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
    module.load_state_dict(state_dict, strict=False)
    return module


def scale_shape(quantized_weight):
    # 0.33 (comfy_kitchen) keeps a layout's parameters in a dataclass, 0.3.75 in a dict
    params = getattr(quantized_weight, "_params", None)
    scale = params.scale if params is not None else quantized_weight._layout_params["scale"]
    return list(scale.shape)


def outcome(call):
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - what stock raises is the finding
        return f"{type(error).__name__}: {str(error)[:120]}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import_comfy()
    import comfy.lora
    import comfy.model_patcher

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(OUT_FEATURES, IN_FEATURES, generator=generator)
    weight[WIDE_CHANNEL] *= 20
    weight_fp8, weight_scale = per_channel_fp8(weight)
    dequantized = weight_fp8.float() * weight_scale
    x = torch.randn(8, IN_FEATURES, generator=generator)
    findings = {"comfyui": "0.33" if "comfy_kitchen" in sys.modules else "0.3.75", "torch": torch.__version__}

    for full_precision_mm in (True, False):
        module = stock_fp8_linear(weight_fp8, weight_scale, full_precision_mm)

        def forward(grad_mode):
            with grad_mode():
                return relative_error(module.linear(x), x @ dequantized.T)
        findings[f"stock_layer_full_precision_mm_{full_precision_mm}"] = {
            "scale_shape_loaded": scale_shape(module.linear.weight),
            "error_inference_mode": outcome(lambda: forward(torch.inference_mode)),
            "error_no_grad": outcome(lambda: forward(torch.no_grad))}

    module = stock_fp8_linear(weight_fp8, weight_scale, full_precision_mm=True)
    patcher = comfy.model_patcher.ModelPatcher(module, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    up = torch.randn(OUT_FEATURES, RANK, generator=generator) * 0.05
    down = torch.randn(RANK, IN_FEATURES, generator=generator) * 0.05
    lora = comfy.lora.load_lora({"linear.lora_up.weight": up, "linear.lora_down.weight": down},
                                {"linear": "linear.weight"})
    patcher.add_patches(lora, 1.0)
    with torch.inference_mode():
        patcher.patch_weight_to_device("linear.weight", device_to=torch.device("cpu"))
        merged = module.linear.weight.dequantize()
    exact = dequantized + up @ down
    narrow = [channel for channel in range(OUT_FEATURES) if channel != WIDE_CHANNEL]
    findings["stock_lora_merge"] = {
        "scale_shape_after": scale_shape(module.linear.weight),
        "weight_error": relative_error(merged, exact),
        "narrow_channels_weight_error": relative_error(merged[narrow], exact[narrow]),
        # what one rounding to per-channel FP8 costs the weight, for scale: merging rounds a second time
        "per_channel_fp8_rounding_error": relative_error(dequantized, weight)}
    findings["stock_get_key_patches"] = outcome(lambda: sorted(patcher.get_key_patches()))

    args.out.write_text(json.dumps(findings, indent=1) + "\n")
    print(json.dumps(findings, indent=1))


if __name__ == "__main__":
    main()
