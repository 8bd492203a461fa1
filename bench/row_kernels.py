"""GPU times of the one-pass row kernels at SD3.5's shapes over their launch configurations: the norm +
modulation + FP8 quantization before qkv and fc1 (rows per program x warps) and the GELU + FP8
quantization before fc2 (warps), with the bandwidth each reaches (input read once, FP8 values and
scales written once). In a profiled compiled Large step on an H200 the two took 3.0 and 3.6 ms, about
1.9 and 2.6 TB/s (bench/results/speed_compiled21_033_large_gaussian_profiled.json), where the card
moves about 4 TB/s: this finds whether another configuration closes part of that. The launchers'
own choice is marked `current`. GPU time alone (CUDA graph replay).

  python bench/row_kernels.py --out bench/results/kernels_rows.json
"""
import argparse
import json
import sys
from pathlib import Path

import torch
import triton
import triton.testing

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import pack_import  # noqa: E402,F401  (the pack as `sd35_fp8`)
from sd35_fp8.quant.kernels import triton_kernels as kernels  # noqa: E402
from sd35_fp8.quant.scales import FP8_DTYPE, FP8_MAX, MIN_SCALE  # noqa: E402

# 1024x1024 with CFG: 2 x 4096 image tokens; (name, width, MLP hidden width)
SHAPES = [("Large", 2432, 9728), ("Medium", 1536, 6144)]
TOKENS, BATCH = 4096, 2


def gpu_ms(fn):
    fn()
    return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def norm_configs(width):
    x = torch.randn(BATCH, TOKENS, width, device="cuda", dtype=torch.bfloat16)
    shift, scale = (torch.randn(BATCH, 6 * width, device="cuda") * 0.5).bfloat16().chunk(6, dim=1)[:2]
    rows = BATCH * TOKENS
    out = torch.empty(rows, width, device="cuda", dtype=FP8_DTYPE)
    out_scale = torch.empty(rows, 1, device="cuda", dtype=torch.float32)
    head, tail = kernels._head_and_tail(width)
    current = kernels._rows_per_program(TOKENS, width, kernels._NORM_TILE_ELEMENTS)
    moved = x.numel() * 2 + out.numel() + rows * 4
    for rows_per_program in (1, 2, 4, 8):
        for warps in (2, 4, 8, 16):
            def launch():
                kernels._layer_norm_modulate_quantize_rows_kernel[(rows // rows_per_program,)](
                    x, shift, scale, out, out_scale, width, TOKENS, x.stride(1), shift.stride(0), scale.stride(0),
                    EPS=1e-6, FP8_MAX=FP8_MAX, MIN_SCALE=MIN_SCALE, ROWS=rows_per_program, HEAD=head, TAIL=tail,
                    num_warps=warps)
            ms = gpu_ms(launch)
            yield {"kernel": "norm_quantize", "rows_per_program": rows_per_program, "warps": warps, "ms": ms,
                   "tb_per_s": moved / ms / 1e9,
                   "current": rows_per_program == current and warps == kernels._NORM_WARPS}


def gelu_configs(hidden):
    rows = BATCH * TOKENS
    x = torch.randn(rows, hidden, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(rows, hidden, device="cuda", dtype=FP8_DTYPE)
    scale = torch.empty(rows, 1, device="cuda", dtype=torch.float32)
    head, tail = kernels._head_and_tail(hidden)
    moved = x.numel() * 2 + out.numel() + rows * 4
    for warps in (4, 8, 16, 32):
        def launch():
            kernels._gelu_quantize_rows_kernel[(rows,)](x, out, scale, hidden, x.stride(0), FP8_MAX=FP8_MAX,
                                                        MIN_SCALE=MIN_SCALE, HEAD=head, TAIL=tail, num_warps=warps)
        ms = gpu_ms(launch)
        yield {"kernel": "gelu_quantize", "warps": warps, "ms": ms, "tb_per_s": moved / ms / 1e9,
               "current": warps == kernels._GELU_WARPS}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for name, width, hidden in SHAPES:
        for row in (*norm_configs(width), *gelu_configs(hidden)):
            row = {"shape": name, **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                    "triton": triton.__version__, "tokens": BATCH * TOKENS, "configs": rows},
                                   indent=1))


if __name__ == "__main__":
    main()
