"""GPU times of a joint block's attention inputs at SD3.5's shapes (1024x1024 with CFG: 2 x 154 context and
2 x 4096 image tokens): q and k RMS norms of both streams and the concatenation of q, k and v, done
as the loader's blocks did it before the one-pass kernel (our q and k norm kernel, then torch.cat as
ComfyUI's block mixing calls it), as torch.compile fuses the same (what compiled steps ran), and in
the one pass (quant/kernels/joint_qkv.py). GPU time alone (CUDA graph replay), with the effective
bandwidth of the one pass (each stream's qkv read once, q, k and v written once).

  python bench/joint_qkv_kernels.py --out bench/results/kernels_joint_qkv.json
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
from sd35_fp8.quant.kernels.joint_qkv import joint_qkv  # noqa: E402
from sd35_fp8.quant.kernels.triton_kernels import head_rms_norm_triton, joint_qkv_triton  # noqa: E402

SHAPES = [("Large", 38), ("Medium", 24)]
CONTEXT_TOKENS, X_TOKENS, HEAD_DIM, EPS = 154, 4096, 64, 1e-6


def gpu_ms(fn):
    fn()
    return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def norms_then_cat(context_qkv, x_qkv, context_q, context_k, x_q, x_k):
    def stream(qkv, q_weight, k_weight):
        q, k, v = qkv.reshape(qkv.shape[0], qkv.shape[1], 3, -1, HEAD_DIM).movedim(2, 0)
        return (head_rms_norm_triton(q, q_weight, EPS).flatten(2), head_rms_norm_triton(k, k_weight, EPS).flatten(2), v)
    context, x = stream(context_qkv, context_q, context_k), stream(x_qkv, x_q, x_k)
    return [torch.cat((context[t], x[t]), dim=1) for t in range(3)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    compiled = torch.compile(joint_qkv, fullgraph=True)
    rows = []
    for name, heads in SHAPES:
        width = heads * HEAD_DIM
        streams = [torch.randn(2, tokens, 3 * width, device="cuda", dtype=torch.bfloat16) for tokens in (CONTEXT_TOKENS, X_TOKENS)]
        weights = [(torch.rand(HEAD_DIM, device="cuda") + 0.5).bfloat16() for _ in range(4)]
        inputs = (*streams, *weights)
        one_pass = joint_qkv_triton(*inputs, HEAD_DIM, EPS)
        reference = joint_qkv(*inputs, HEAD_DIM, EPS)
        moved = 2 * sum(s.numel() for s in streams) * 2  # bytes read + written, bf16
        row = {"shape": name, "heads": heads, "tokens": 2 * (CONTEXT_TOKENS + X_TOKENS),
               "norm_kernel_then_cat_ms": gpu_ms(lambda: norms_then_cat(*inputs)),
               "inductor_ms": gpu_ms(lambda: compiled(*inputs, HEAD_DIM, EPS)),
               "one_pass_ms": gpu_ms(lambda: joint_qkv_triton(*inputs, HEAD_DIM, EPS)),
               "one_pass_values_off_reference": float((one_pass != reference).float().mean())}
        row["one_pass_tb_per_s"] = moved / row["one_pass_ms"] / 1e9
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                    "triton": triton.__version__, "per_joint_block": rows}, indent=1))


if __name__ == "__main__":
    main()
