"""Host microseconds per call of the pieces of the eager FP8 linear (output allocation, the Triton
quantize launch, torch._scaled_mm, F.linear, the LoRA down projection) and of two cheaper ways to
launch the same Triton kernel: its CompiledKernel called directly, and Inductor's static launcher.
Small shapes, so the GPU keeps up with the host. GPU only:

  python bench/launch_cost.py bench/results/launch_cost.json
"""
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from quant.kernels.triton_kernels import (_head_and_tail, _quantize_rows_kernel, _rows_per_program,  # noqa: E402
                                         quantize_rows_triton)
from quant.scales import FP8_DTYPE, FP8_MAX, MIN_SCALE  # noqa: E402

CALLS = 3000
ROWS, COLS, OUT_FEATURES = 32, 2432, 2432


def host_us_per_call(fn):
    """Best of three loops of CALLS calls: the host's time per call (the GPU keeps up at this size)."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(CALLS):
            fn()
        best = min(best, (time.perf_counter() - start) / CALLS * 1e6)
        torch.cuda.synchronize()
    return round(best, 2)


def measure(results, name, fn):
    try:
        results[name] = host_us_per_call(fn)
    except Exception:  # a launch path this torch/Triton does not have: recorded, the others still run
        results[name] = "error: " + traceback.format_exc().strip().splitlines()[-1]
    print(name, results[name], flush=True)


def main(out_path):
    x = torch.randn(ROWS, COLS, device="cuda", dtype=torch.bfloat16)
    weight_fp8 = torch.randn(OUT_FEATURES, COLS, device="cuda").to(FP8_DTYPE)
    weight_scale = torch.rand(1, OUT_FEATURES, device="cuda") + 0.5
    weight_bf16 = torch.randn(OUT_FEATURES, COLS, device="cuda", dtype=torch.bfloat16)
    out = torch.empty((ROWS, COLS), device="cuda", dtype=FP8_DTYPE)
    scale = torch.empty((ROWS, 1), device="cuda", dtype=torch.float32)
    rows_per_program = _rows_per_program(ROWS, COLS)
    head, tail = _head_and_tail(COLS)
    grid = ROWS // rows_per_program
    # the rows as one sample of ROWS tokens: (x, out, scale, cols, tokens, batch stride, token stride)
    arguments = (x, out, scale, COLS, ROWS, ROWS * x.stride(0), x.stride(0))
    constants = dict(FP8_MAX=FP8_MAX, MIN_SCALE=MIN_SCALE, ROWS=rows_per_program, HEAD=head, TAIL=tail)
    results = {"torch": torch.__version__, "triton": triton.__version__, "device": torch.cuda.get_device_name(),
               "shape": f"{ROWS} rows x {COLS} -> {OUT_FEATURES}, bf16 activations, fp8 weight",
               "command": "python bench/launch_cost.py " + out_path}

    def jit_launch():
        return _quantize_rows_kernel[(grid,)](*arguments, **constants, num_warps=4)

    measure(results, "torch.empty x2", lambda: (torch.empty((ROWS, COLS), device="cuda", dtype=FP8_DTYPE),
                                                torch.empty((ROWS, 1), device="cuda", dtype=torch.float32)))
    measure(results, "quantize_rows_triton (pack)", lambda: quantize_rows_triton(x))
    measure(results, "triton jit launch only", jit_launch)
    compiled = jit_launch()
    results["compiled_kernel_type"] = type(compiled).__name__
    runner = compiled[(grid, 1, 1)]
    # the launcher takes every argument of the signature, constexprs included
    measure(results, "CompiledKernel runner (all args)",
            lambda: runner(*arguments, *constants.values()))
    expected_out, expected_scale = quantize_rows_triton(x)
    out.zero_()
    scale.zero_()
    runner(*arguments, *constants.values())
    torch.cuda.synchronize()
    results["runner_matches"] = bool(torch.equal(out.view(torch.uint8), expected_out.view(torch.uint8))
                                     and torch.equal(scale, expected_scale))
    try:
        try:  # torch 2.11's module; earlier versions named it static_cuda_launcher
            from torch._inductor.runtime.static_triton_launcher import StaticallyLaunchedCudaKernel
        except ImportError:
            from torch._inductor.runtime.static_cuda_launcher import StaticallyLaunchedCudaKernel
        static = StaticallyLaunchedCudaKernel(compiled)
        static.load_kernel(torch.cuda.current_device())
        stream = torch.cuda.current_stream().cuda_stream
        measure(results, "inductor static launcher", lambda: static.run(grid, 1, 1, stream, *arguments))
    except Exception:
        results["static"] = traceback.format_exc().strip().splitlines()[-1]
    x_fp8, x_scale = quantize_rows_triton(x)
    measure(results, "_scaled_mm rowwise", lambda: torch._scaled_mm(x_fp8, weight_fp8.t(), scale_a=x_scale,
                                                                    scale_b=weight_scale, out_dtype=torch.bfloat16))
    measure(results, "F.linear bf16", lambda: F.linear(x, weight_bf16))
    measure(results, "x @ down.t() rank16", lambda: x @ weight_bf16[:16].t())
    Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
