"""Kernel times on the SD3.5 Large linear shapes: bf16 GEMM, FP8 GEMM, and the activation
quantization that feeds it (Triton single pass, torch eager, torch.compile), to compare the
quantization cost with the GEMM it feeds; on few rows also the FP8-weight kernel of
quant/kernels/small_m_linear.py, to place the row count up to which it is used.

  python bench/kernels.py --out bench/results/kernels.json
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
from sd35_fp8.quant.kernels.fp8_linear import fp8_linear_rowwise, quantize_rows, weight_only_linear  # noqa: E402
from sd35_fp8.quant.kernels.small_m_linear import SMALL_M_MAX_ROWS, small_m_linear_op  # noqa: E402
from sd35_fp8.quant.kernels.triton_kernels import dequantize_triton, quantize_rows_triton  # noqa: E402
from sd35_fp8.quant.scales import quantize_weight  # noqa: E402

# (name, rows M, in K, out N): 1024x1024 image with CFG = 2 x 4096 image tokens; the context
# stream has 2 x 154 tokens; adaLN acts on one conditioning row per image.
LARGE_SHAPES = [("x qkv", 8192, 2432, 7296), ("x proj", 8192, 2432, 2432), ("x fc1", 8192, 2432, 9728),
                ("x fc2", 8192, 9728, 2432), ("context qkv", 308, 2432, 7296), ("context fc1", 308, 2432, 9728),
                ("context fc2", 308, 9728, 2432), ("adaLN", 2, 2432, 14592), ("adaLN, CFG unbatched", 1, 2432, 14592),
                ("final adaLN", 2, 2432, 4864)]


def median_ms(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")


def gpu_ms(fn):
    return triton.testing.do_bench_cudagraph(fn, rep=200, return_mode="median")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    compiled_quantize = torch.compile(quantize_rows)
    rows = []
    for name, m, k, n in LARGE_SHAPES:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * k ** -0.5
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) * 0.1
        weight_fp8, scale = quantize_weight(weight)
        x_fp8, x_scale = quantize_rows_triton(x)
        w_scale_row = scale.reshape(1, n).contiguous()
        reference = (x.double() @ weight.double().t() + bias.double())
        out = fp8_linear_rowwise(x, weight_fp8, scale, bias, quantize=quantize_rows_triton)
        row = {"shape": name, "M": m, "K": k, "N": n,
               "bf16_gemm_ms": median_ms(lambda: torch.nn.functional.linear(x, weight, bias)),
               "fp8_gemm_ms": median_ms(lambda: torch._scaled_mm(x_fp8, weight_fp8.t(), scale_a=x_scale, scale_b=w_scale_row,
                                                                 bias=bias, out_dtype=torch.bfloat16)),
               "quant_triton_ms": median_ms(lambda: quantize_rows_triton(x)),
               "quant_eager_ms": median_ms(lambda: quantize_rows(x)),
               "quant_compiled_ms": median_ms(lambda: compiled_quantize(x)),
               "fp8_linear_eager_ms": median_ms(lambda: fp8_linear_rowwise(x, weight_fp8, scale, bias, quantize=quantize_rows_triton)),
               "weight_only_torch_ms": median_ms(lambda: weight_only_linear(x, weight_fp8, scale, bias)),
               "weight_only_ms": median_ms(lambda: weight_only_linear(x, weight_fp8, scale, bias, dequantize=dequantize_triton)),
               "fp8_linear_error": relative_error(out, reference)}
        if m <= SMALL_M_MAX_ROWS:
            # GPU time alone (CUDA graph replay) too: at a few rows eager launch overhead dominates.
            small_m_linear = small_m_linear_op()
            small = small_m_linear(x, weight_fp8, scale, bias)
            row["small_m_kernel_ms"] = median_ms(lambda: small_m_linear(x, weight_fp8, scale, bias))
            row["small_m_kernel_gpu_ms"] = gpu_ms(lambda: small_m_linear(x, weight_fp8, scale, bias))
            row["fp8_linear_gpu_ms"] = gpu_ms(lambda: fp8_linear_rowwise(x, weight_fp8, scale, bias, quantize=quantize_rows_triton))
            row["small_m_kernel_error"] = relative_error(small, reference)
        row["quant_over_gemm"] = row["quant_triton_ms"] / row["fp8_gemm_ms"]
        row["fp8_tflops"] = 2 * m * k * n / row["fp8_gemm_ms"] / 1e9
        row["bf16_tflops"] = 2 * m * k * n / row["bf16_gemm_ms"] / 1e9
        row["quant_gb_per_s"] = m * k * 3 / row["quant_triton_ms"] / 1e6
        rows.append(row)
        print(json.dumps({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                    "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
