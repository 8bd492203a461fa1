"""GPU time of cuBLAS's FP8 GEMM by the width of a LoRA's extra FP8 columns (quant/kernels/low_rank_columns.py),
at SD3.5's LoRA'd shapes (qkv and fc1 at 1024x1024 with CFG): the GEMM on rows and weight already joined with
`extra` columns of K, with the joined weight's rows contiguous or padded to a multiple of 128 bytes; the join of
weight and columns alone (torch.cat, as each call does it now); and, for the context stream's few rows, the
LoRA added after the GEMM instead (down projection from the FP8 rows, then addmm_ over the output).
kernels_lora.json measured the whole column path at one width: cuBLAS's time for Large's x qkv rose from 0.231 to
0.289 ms with it, far more than its 3% wider K. This says how much of that is the width and how much the join.

  python bench/lora_columns_width.py --out bench/results/kernels_lora_columns_width.json
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
from sd35_fp8.quant.kernels.fp8_linear import FAST_ACCUMULATION  # noqa: E402
from sd35_fp8.quant.kernels.triton_kernels import fp8_rows_down_triton  # noqa: E402
from sd35_fp8.quant.scales import FP8_DTYPE  # noqa: E402

SHAPES = [("Large x qkv", 8192, 2432, 7296), ("Large x fc1", 8192, 2432, 9728),
          ("Medium x qkv", 8192, 1536, 4608), ("Medium x fc1", 8192, 1536, 6144),
          ("Large context qkv", 308, 2432, 7296), ("Large context fc1", 308, 2432, 9728)]
EXTRA_COLUMNS = [0, 16, 32, 48, 64, 80, 96, 112, 128, 192, 256]
RANK = 16


def gpu_ms(fn):
    fn()
    return round(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"), 5)


def fp8(rows, cols, row_stride=None):
    """A (rows, cols) FP8 tensor of random values whose rows lie row_stride apart (cols when None)."""
    storage = (torch.randn(rows, row_stride or cols, device="cuda") * 64).to(FP8_DTYPE)
    return storage[:, :cols]


def gemm(x, w, x_scale, w_scale, bias):
    return torch._scaled_mm(x, w.t(), scale_a=x_scale, scale_b=w_scale, bias=bias, out_dtype=torch.bfloat16,
                            use_fast_accum=FAST_ACCUMULATION)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for name, m, k, n in SHAPES:
        x_scale = torch.rand(m, 1, device="cuda") + 0.5
        w_scale = torch.rand(1, n, device="cuda") + 0.5
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
        weight = fp8(n, k)
        row = {"shape": name, "M": m, "K": k, "N": n, "gemm_ms": {}, "gemm_padded_rows_ms": {}, "join_ms": {}}
        for extra in EXTRA_COLUMNS:
            width = k + extra
            x_ext, w_ext = fp8(m, width), fp8(n, width)
            row["gemm_ms"][extra] = gpu_ms(lambda: gemm(x_ext, w_ext, x_scale, w_scale, bias))
            padded = -(-width // 128) * 128
            if padded != width:
                w_padded = fp8(n, width, padded)
                row["gemm_padded_rows_ms"][extra] = gpu_ms(lambda: gemm(x_ext, w_padded, x_scale, w_scale, bias))
            if extra:
                up_columns = fp8(n, extra)
                row["join_ms"][extra] = gpu_ms(lambda: torch.cat([weight, up_columns], dim=1))
        x_fp8 = fp8(m, k)
        down = torch.randn(RANK, k, device="cuda", dtype=torch.bfloat16) * 0.02
        up = torch.randn(n, RANK, device="cuda", dtype=torch.bfloat16) * 0.02
        out = gemm(x_fp8, weight, x_scale, w_scale, bias)
        low = fp8_rows_down_triton(x_fp8, x_scale, down)
        row["down_from_fp8_rows_ms"] = gpu_ms(lambda: fp8_rows_down_triton(x_fp8, x_scale, down))
        row["addmm_up_ms"] = gpu_ms(lambda: out.addmm_(low, up.t()))
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                    "triton": triton.__version__, "command": " ".join(sys.argv),
                                    "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
