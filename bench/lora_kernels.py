"""Kernel times of a LoRA on an FP8 layer, on the SD3.5 Large and Medium linear shapes at 1024x1024
with CFG: the FP8 linear alone, with the LoRA added after torch._scaled_mm (one addmm_ over the
output), and with the LoRA in the epilogue of the Triton FP8 GEMM (quant/kernels/low_rank_gemm.py),
each with its error against the patched layer in fp64 (wall times of the eager calls, launches
included); and GPU times alone (CUDA graph replay) of the parts: cuBLAS's FP8 GEMM as the layers
call it (fast accumulation, quant/kernels/fp8_linear.py), the LoRA's down projection from the bf16
input and from the FP8 rows (quant/kernels/low_rank_rows.py, the one-pass blocks' path) and its
addmm_, the Triton GEMMs with the LoRA in the epilogue (TMA loads and plain loads), the LoRA as extra
FP8 columns of cuBLAS's GEMM (quant/kernels/low_rank_columns.py: the columns written after the rows, then the GEMM),
and for the layers after a block's norm (qkv, fc1) that norm alone and with the down projection in its launch
(quant/kernels/norm_quantize.py).

  python bench/lora_kernels.py --out bench/results/kernels_lora.json
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
from sd35_fp8.quant.kernels.fp8_linear import fp8_linear_rowwise, fp8_rows_matmul  # noqa: E402
from sd35_fp8.quant.kernels.low_rank import LowRank  # noqa: E402
from sd35_fp8.quant.kernels.low_rank_gemm import fp8_gemm_low_rank_op, fp8_linear_rowwise_low_rank  # noqa: E402
from sd35_fp8.quant.kernels.low_rank_columns import rank_columns  # noqa: E402
from sd35_fp8.quant.kernels.triton_kernels import (fp8_rows_columns_triton, fp8_rows_down_triton,  # noqa: E402
                                                   layer_norm_modulate_quantize_rows_down_triton,
                                                   layer_norm_modulate_quantize_rows_triton, quantize_rows_triton)
from sd35_fp8.quant.kernels.triton_low_rank_gemm import (fp8_gemm_low_rank_tma_triton,  # noqa: E402
                                                         fp8_gemm_low_rank_triton)
from sd35_fp8.quant.scales import quantize_weight  # noqa: E402

SHAPES = [("Large x qkv", 8192, 2432, 7296), ("Large x fc1", 8192, 2432, 9728), ("Large x proj", 8192, 2432, 2432),
          ("Large x fc2", 8192, 9728, 2432), ("Large context qkv", 308, 2432, 7296),
          ("Medium x qkv", 8192, 1536, 4608), ("Medium x fc1", 8192, 1536, 6144)]


def median_ms(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")


def gpu_ms(fn):
    fn()
    return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    gemm = fp8_gemm_low_rank_op()
    rows = []
    for name, m, k, n in SHAPES:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        weight = torch.randn(n, k, device="cuda") * k ** -0.5
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) * 0.1
        side = LowRank(torch.randn(n, args.rank, device="cuda", dtype=torch.bfloat16) * 0.02,
                       torch.randn(args.rank, k, device="cuda", dtype=torch.bfloat16) * 0.02)
        zero = LowRank(side.up * 0, side.down)
        weight_fp8, scale = quantize_weight(weight)
        expected = x.double() @ (weight.double() + side.up.double() @ side.down.double()).t() + bias.double()

        def plain():
            return fp8_linear_rowwise(x, weight_fp8, scale, bias, quantize=quantize_rows_triton)

        def added_after():
            return side.add_to(plain(), x)

        def in_epilogue(low_rank=side):
            return fp8_linear_rowwise_low_rank(x, weight_fp8, scale, bias, low_rank, quantize_rows_triton, gemm)

        x_fp8, x_scale = quantize_rows_triton(x)
        w_scale = scale.reshape(-1).contiguous()
        low = x @ side.down.t()
        out = plain()
        columns = rank_columns(side.up, side.down, scale)
        x_ext = torch.empty((m, k + columns.up_fp8.shape[1]), device="cuda", dtype=x_fp8.dtype)
        x_ext[:, :k] = x_fp8
        joined = fp8_rows_columns_triton(x_ext, k, side.down, columns.spread, weight_fp8, columns.up_fp8)
        gpu = {"cublas_fp8_gemm": lambda: fp8_rows_matmul(x_fp8, x_scale, weight_fp8, scale, bias, torch.bfloat16),
               "down_projection": lambda: x @ side.down.t(),
               "down_from_fp8_rows": lambda: fp8_rows_down_triton(x_fp8, x_scale, side.down),
               "lora_columns_into_rows_and_join": lambda: fp8_rows_columns_triton(
                   x_ext, k, side.down, columns.spread, weight_fp8, columns.up_fp8),
               "cublas_fp8_gemm_with_lora_columns_joined": lambda: fp8_rows_matmul(
                   x_ext, x_scale, joined, scale, bias, torch.bfloat16),
               "addmm_up": lambda: out.addmm_(low, side.up.t()),
               "triton_plain_loads": lambda: fp8_gemm_low_rank_triton(x_fp8, x_scale, weight_fp8, w_scale, bias,
                                                                       low, side.up),
               "triton_tma": lambda: fp8_gemm_low_rank_tma_triton(x_fp8, x_scale, weight_fp8, w_scale, bias, low,
                                                                  side.up)}
        if k in (2432, 1536):  # the inputs of a block's norm: qkv, fc1
            x3, (shift, shift_scale) = x.view(2, m // 2, k), torch.randn(2, 2 * k, device="cuda").bfloat16().chunk(2, 1)
            gpu["norm_quantize"] = lambda: layer_norm_modulate_quantize_rows_triton(x3, shift, shift_scale, 1e-6)
            gpu["norm_quantize_with_down"] = lambda: layer_norm_modulate_quantize_rows_down_triton(
                x3, shift, shift_scale, 1e-6, side.down)
        row = {"shape": name, "M": m, "K": k, "N": n, "rank": args.rank,
               "fp8_linear_ms": median_ms(plain), "lora_added_after_ms": median_ms(added_after),
               "lora_in_epilogue_ms": median_ms(in_epilogue),
               "zero_lora_in_epilogue_ms": median_ms(lambda: in_epilogue(zero)),
               "error_added_after": relative_error(added_after(), expected),
               "error_in_epilogue": relative_error(in_epilogue(), expected)}
        row.update({f"gpu_{part}_ms": gpu_ms(fn) for part, fn in gpu.items()})
        row["tma_error"] = relative_error(gpu["triton_tma"](), expected)
        row["lora_cost_after"] = row["lora_added_after_ms"] / row["fp8_linear_ms"] - 1
        row["lora_cost_epilogue"] = row["lora_in_epilogue_ms"] / row["fp8_linear_ms"] - 1
        rows.append(row)
        print(json.dumps({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                    "triton": triton.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
