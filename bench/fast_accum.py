"""FP8 GEMM with and without fast accumulation (torch._scaled_mm's use_fast_accum) at SD3.5's linear
shapes: GPU time of each, and each one's error against the float64 product of the same FP8 inputs
(what the accumulation alone adds) and against the float64 product of the unquantized inputs (the
whole FP8 error a layer makes).

  python bench/fast_accum.py --out bench/results/fast_accum.json
"""
import argparse
import json
import sys
from pathlib import Path

import torch
import triton.testing

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import pack_import  # noqa: E402,F401  (the pack as `sd35_fp8`)
from devtools.numerics import relative_error  # noqa: E402
from sd35_fp8.quant.kernels.fp8_linear import scale_per_output  # noqa: E402
from sd35_fp8.quant.kernels.triton_kernels import quantize_rows_triton  # noqa: E402
from sd35_fp8.quant.scales import quantize_weight  # noqa: E402

# (model, layer, rows M, in K, out N): 1024x1024 with CFG, 2 x 4096 image tokens and 2 x 154 text tokens
SHAPES = [("large", "x qkv", 8192, 2432, 7296), ("large", "x proj", 8192, 2432, 2432),
          ("large", "x fc1", 8192, 2432, 9728), ("large", "x fc2", 8192, 9728, 2432),
          ("large", "context qkv", 308, 2432, 7296), ("medium", "x qkv", 8192, 1536, 4608),
          ("medium", "x fc1", 8192, 1536, 6144), ("medium", "x fc2", 8192, 6144, 1536)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    generator = torch.Generator(device="cuda").manual_seed(0)
    for model, name, m, k, n in SHAPES:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=generator)
        weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=generator) * k ** -0.5
        weight_fp8, scale = quantize_weight(weight)
        x_fp8, x_scale = quantize_rows_triton(x)
        w_scale = scale_per_output(scale, n).view(1, n)
        exact_inputs = (x_fp8.double() * x_scale.double()) @ (weight_fp8.double() * w_scale.double().t()).t()
        unquantized = x.double() @ weight.double().t()
        row = {"model": model, "shape": name, "M": m, "K": k, "N": n}
        for label, fast in (("promoted", False), ("fast", True)):
            def gemm():
                return torch._scaled_mm(x_fp8, weight_fp8.t(), scale_a=x_scale, scale_b=w_scale,
                                        out_dtype=torch.bfloat16, use_fast_accum=fast)
            out = gemm()
            row[f"{label}_ms"] = round(triton.testing.do_bench_cudagraph(gemm, rep=200, return_mode="median"), 4)
            row[f"{label}_error_vs_fp8_inputs"] = round(relative_error(out, exact_inputs), 6)
            row[f"{label}_error_vs_unquantized"] = round(relative_error(out, unquantized), 6)
        row["fast_over_promoted"] = round(row["fast_ms"] / row["promoted_ms"], 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                    "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
