"""GPU time of FP8 attention (quant/kernels/triton_attention.py) against torch's SDPA with cuDNN's
kernel (what our models run otherwise, nodes/attention_backend.py) at SD3.5's joint attention shapes
(1024x1024 with CFG: batch 2, 4096 image + 154 context tokens, head dim 64), over the kernel's launch
configurations, with TFLOP/s (4 x batch x heads x tokens^2 x head_dim) and the relative error of each
against fp32 attention. The K/V quantization pass is timed with the kernel, and alone. GPU time alone
(CUDA graph replay).

  python bench/fp8_attention_kernels.py --out bench/results/kernels_fp8_attention.json
"""
import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import pack_import  # noqa: E402,F401  (the pack as `sd35_fp8`)
from devtools.numerics import relative_error  # noqa: E402
from sd35_fp8.quant.kernels.triton_attention import (DEFAULT_CONFIG, fp8_attention_triton,  # noqa: E402
                                                     quantize_kv_blocks)

SHAPES = [("Large", 38), ("Medium", 24)]
BATCH, TOKENS, HEAD_DIM = 2, 4096 + 154, 64
# (BLOCK_M, BLOCK_N, warps, stages)
CONFIGS = [(m, n, 8 if m == 128 else 4, s) for m, n, s in itertools.product((64, 128), (64, 128), (2, 3, 4))]


def gpu_ms(fn):
    fn()
    return triton.testing.do_bench_cudagraph(fn, rep=200, return_mode="median")


def heads_first(t, heads):
    return t.reshape(BATCH, TOKENS, heads, HEAD_DIM).transpose(1, 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--all-configs-for", default="Large", help="the shape swept over CONFIGS")
    args = parser.parse_args()
    rows = []
    for name, heads in SHAPES:
        q, k, v = (torch.randn(BATCH, TOKENS, heads * HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * BATCH * heads * TOKENS ** 2 * HEAD_DIM
        exact = torch.nn.functional.scaled_dot_product_attention(*(heads_first(t.float(), heads) for t in (q, k, v)))
        exact = exact.transpose(1, 2).reshape(BATCH, TOKENS, -1)

        def cudnn():
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                out = torch.nn.functional.scaled_dot_product_attention(*(heads_first(t, heads) for t in (q, k, v)))
            return out.transpose(1, 2).reshape(BATCH, TOKENS, -1)
        ms = gpu_ms(cudnn)
        rows.append({"shape": name, "kernel": "cudnn_sdpa_bf16", "ms": ms, "tflops": flops / ms / 1e9,
                     "error": relative_error(cudnn(), exact)})
        print(json.dumps(rows[-1]), flush=True)
        ms = gpu_ms(lambda: quantize_kv_blocks(k, v, heads, DEFAULT_CONFIG[1]))
        rows.append({"shape": name, "kernel": "k/v quantization alone", "block_n": DEFAULT_CONFIG[1], "ms": ms})
        print(json.dumps(rows[-1]), flush=True)
        for config in CONFIGS if name == args.all_configs_for else [DEFAULT_CONFIG]:
            try:
                ms = gpu_ms(lambda: fp8_attention_triton(q, k, v, heads, config=config))
            except Exception as error:  # a configuration the GPU cannot hold (shared memory, registers)
                rows.append({"shape": name, "kernel": "fp8_attention", "config": config,
                             "failed": f"{type(error).__name__}: {str(error)[:200]}"})
                print(json.dumps(rows[-1]), flush=True)
                continue
            rows.append({"shape": name, "kernel": "fp8_attention", "config": config, "ms": ms,
                         "tflops": flops / ms / 1e9, "default": config == DEFAULT_CONFIG,
                         "error": relative_error(fp8_attention_triton(q, k, v, heads, config=config), exact)})
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                    "triton": triton.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
