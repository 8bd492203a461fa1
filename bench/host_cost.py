"""Host time per linear call: what each Linear costs the CPU per call, stock ComfyUI's ops against
this pack's, at a size where the GPU work is negligible, so the time per call is the host's (the
calls are queued without waiting; the GPU keeps up). Eager SD3.5 Large steps of ours are bound by
the host on the lent GPU machines (bench/RESULTS.md, LoRA section): this says how much of that is
per layer, and cProfile says where.

  python bench/host_cost.py --out bench/results/host_cost.json

On a machine without CUDA only the variants that run there are timed (ours takes its weight-only
path there, so the figures are not the GPU's).
"""
import argparse
import cProfile
import json
import platform
import pstats
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from devtools.comfy_host import import_comfy_in_process  # noqa: E402

# rows of a call: above the few-rows kernel's limit (adaLN), far below a real step's 8192
ROWS, FEATURES, RANK = 32, 256, 16


def linears(device):
    """{variant: module} of one FEATURES x FEATURES linear each, as ComfyUI builds them."""
    import comfy.model_management
    import comfy.ops
    from devtools.fp8_layer import fp8_linear, lowvram_lora
    from sd35_fp8.quant.kernels.compute_path import choose_compute_path
    dtype = torch.bfloat16
    weight = torch.randn(FEATURES, FEATURES, device=device) * 0.02
    bias = torch.zeros(FEATURES, device=device, dtype=dtype)
    capability = torch.cuda.get_device_capability() if device == "cuda" else None
    modules = {}
    stock = comfy.ops.manual_cast.Linear(FEATURES, FEATURES, device=device, dtype=dtype)
    stock.load_state_dict({"weight": weight.to(dtype), "bias": bias})
    modules["stock default (manual_cast)"] = stock
    fast = comfy.ops.fp8_ops.Linear(FEATURES, FEATURES, device=device, dtype=dtype)
    fast.weight = torch.nn.Parameter(weight.to(torch.float8_e4m3fn), requires_grad=False)
    fast.bias = torch.nn.Parameter(bias, requires_grad=False)
    modules["stock fp8_e4m3fn_fast (fp8_ops)"] = fast
    for force_weight_only in (True, False):
        path = choose_compute_path(device, capability, comfy.model_management.torch_version_numeric, force_weight_only)
        name = f"ours {path.name}"
        if name in modules:
            continue
        modules[name] = fp8_linear(path, weight, bias, dtype)
        with_lora = fp8_linear(path, weight, bias, dtype)
        with_lora.weight_lowvram_function = lowvram_lora("diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
                                                         torch.randn(FEATURES, RANK, device=device) * 0.02,
                                                         torch.randn(RANK, FEATURES, device=device) * 0.02)
        modules[name + " + LoRA"] = with_lora
    return modules


def time_per_call(module, x, calls):
    for _ in range(50):
        module(x)
    synchronize = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    synchronize()
    started = time.perf_counter()
    for _ in range(calls):
        module(x)
    queued = time.perf_counter() - started
    synchronize()
    return queued / calls * 1e6, (time.perf_counter() - started) / calls * 1e6


def profile(module, x, calls):
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        module(x)
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("tottime")
    rows = [{"us_per_call": round(tt / calls * 1e6, 2), "calls_per_call": round(nc / calls, 2),
             "function": f"{Path(file).name}:{line}:{name}"} for (file, line, name), (_, nc, tt, _, _) in stats.stats.items()]
    return sorted(rows, key=lambda r: -r["us_per_call"])[:15]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import_comfy_in_process()
    import comfyui_version
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1, ROWS, FEATURES, device=device, dtype=torch.bfloat16)
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "comfyui": comfyui_version.__version__, "python": platform.python_version(),
              "shape": f"{ROWS} rows x {FEATURES} -> {FEATURES}, bf16", "calls": args.calls, "variants": {}}
    with torch.inference_mode():
        for name, module in linears(device).items():
            queued_us, total_us = time_per_call(module, x, args.calls)
            result["variants"][name] = {"host_us_per_call": round(queued_us, 1), "us_per_call": round(total_us, 1),
                                        "profile": profile(module, x, min(args.calls, 2000))}
            print(f"{name}: {queued_us:.1f} us a call queued, {total_us:.1f} with the GPU's", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
