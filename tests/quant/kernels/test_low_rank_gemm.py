"""The row-wise FP8 GEMM with a LoRA in its epilogue: the Triton kernel run on the CPU by Triton's
interpreter against the fp32 reference, and the linear built on it against the patched layer in
fp64 (the reference GEMM standing in for the kernel on CPU). tests/gpu runs the kernel compiled,
at SD3.5's sizes, eager and under torch.compile."""
import json
import subprocess
import sys

import pytest
import torch

from devtools.comfy_host import REPO
from devtools.numerics import relative_error
from devtools.triton_interpreter import run_interpreted
from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
from sd35_fp8.quant.kernels.low_rank import LowRank
from sd35_fp8.quant.kernels.low_rank_gemm import (fp8_gemm_low_rank_reference, fp8_linear_rowwise_low_rank,
                                                  gemm_rank, pays_in_epilogue)
from sd35_fp8.quant.scales import quantize_weight

from .test_fp8_linear import FP8_MATMUL_BOUND, activations, layer

_INTERPRETED = """
import pack_import, torch, triton
from devtools.triton_interpreter import use_torch_fp8_rounding
from sd35_fp8.quant.kernels.triton_low_rank_gemm import _fp8_gemm_low_rank_kernel
from sd35_fp8.quant.kernels.fp8_linear import quantize_rows
from sd35_fp8.quant.scales import quantize_weight
use_torch_fp8_rounding()
torch.manual_seed({seed})
m, k, n, rank, has_bias = {m}, {k}, {n}, {rank}, {has_bias}
x_fp8, x_scale = quantize_rows(torch.randn(m, k))
weight_fp8, w_scale = quantize_weight(torch.randn(n, k) * k ** -0.5)
# fp16: the interpreter's tl.dot multiplies bf16 tensors' raw bits (numpy has no bf16); tests/gpu runs bf16
bias = torch.randn(n, dtype=torch.float16) if has_bias else None
low, up = torch.randn(m, rank, dtype=torch.float16), torch.randn(n, rank, dtype=torch.float16) * 0.1
out = torch.full((m, n), float("nan"), dtype=torch.float16)
grid = (triton.cdiv(m, 32) * triton.cdiv(n, 32),)
_fp8_gemm_low_rank_kernel.fn[grid](x_fp8, weight_fp8, out, x_scale, w_scale.reshape(-1).contiguous(),
                                   low if bias is None else bias, low, up, m, n, k, HAS_BIAS=has_bias,
                                   RANK=rank, BLOCK_M=32, BLOCK_N=32, BLOCK_K=64, GROUP_M=2)
torch.save(dict(x_fp8=x_fp8, x_scale=x_scale, weight_fp8=weight_fp8, w_scale=w_scale, bias=bias, low=low,
                up=up, out=out), {path!r})
"""


# ragged rows, columns and K (edges of every tile kind), with and without a bias
@pytest.mark.parametrize("m,k,n,rank,has_bias", [(70, 200, 90, 16, True), (64, 128, 64, 32, False)])
def test_interpreted_kernel_matches_reference(tmp_path, m, k, n, rank, has_bias):
    path = tmp_path / "out.pt"
    code = _INTERPRETED.format(seed=m, m=m, k=k, n=n, rank=rank, has_bias=has_bias, path=str(path))
    run_interpreted(code)
    run = torch.load(path)
    reference = fp8_gemm_low_rank_reference(run["x_fp8"], run["x_scale"], run["weight_fp8"], run["w_scale"],
                                            run["bias"], run["low"], run["up"])
    assert not torch.isnan(run["out"]).any()  # every element written, edge tiles included
    # fp16 output rounding (2^-11 relative) is the only difference from the fp32 reference
    assert relative_error(run["out"], reference) <= 0.001
    without_lora = fp8_gemm_low_rank_reference(run["x_fp8"], run["x_scale"], run["weight_fp8"], run["w_scale"],
                                               run["bias"], run["low"] * 0, run["up"])
    assert relative_error(without_lora, reference) > 0.05, "the LoRA must change the output"


@pytest.mark.parametrize("rank, padded", [(1, 16), (8, 16), (16, 16), (17, 32), (64, 64)])
def test_ranks_are_padded_to_a_power_of_two_of_at_least_16(rank, padded):
    assert gemm_rank(rank) == padded


@pytest.mark.parametrize("out_features, in_features, in_epilogue", [(7296, 2432, True), (9728, 2432, True),
                                                                   (2432, 2432, True), (2432, 9728, False)])
def test_the_epilogue_takes_layers_whose_output_is_as_wide_as_their_input(out_features, in_features, in_epilogue):
    # SD3.5 Large's qkv, fc1, proj; fc2 (bench/lora_kernels.py: there the LoRA added after costs less)
    assert pays_in_epilogue(torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn)) == in_epilogue


def test_linear_with_the_lora_in_the_gemm_gives_the_patched_layer():
    weight, bias = layer()
    side = LowRank(torch.randn(weight.shape[0], 8) * 0.02, torch.randn(8, weight.shape[1]))
    weight_fp8, scale = quantize_weight(weight)
    x = activations()
    out = fp8_linear_rowwise_low_rank(x, weight_fp8, scale, bias, side, quantize_rows, fp8_gemm_low_rank_reference)
    expected = x.double() @ (weight + side.up @ side.down).double().t() + bias.double()
    without = x.double() @ weight.double().t() + bias.double()
    assert out.shape == expected.shape and out.dtype == x.dtype
    assert relative_error(out, expected) <= FP8_MATMUL_BOUND
    assert relative_error(without, expected) > 2 * FP8_MATMUL_BOUND, "the LoRA must change the layer"


_GPU_COMPILED = """
import inspect, json, pack_import, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sd35_fp8.quant.kernels import triton_low_rank_gemm
kernel = getattr(triton_low_rank_gemm, {kernel!r}).fn
constants = dict(HAS_BIAS=True, RANK=16, BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, GROUP_M=8)
operands = {operands!r}
parameters = list(inspect.signature(kernel.fn).parameters)
types = [*operands, "*fp32", "*fp32", "*bf16", "*bf16", "*bf16", "i32", "i32", "i32"]
signature = dict(zip(parameters, types), **dict.fromkeys(constants, "constexpr"))
source = ASTSource(fn=kernel, signature=signature,
                   constexprs={{(parameters.index(k),): v for k, v in constants.items()}})
options = dict(num_warps=8, num_stages=3)
ptx = triton.compile(source, target=GPUTarget("cuda", {capability}, 32), options=options).asm["ptx"]
print(json.dumps(dict(wgmma="wgmma" in ptx, tma="cp.async.bulk.tensor" in ptx,
                      tma_store="cp.async.bulk.tensor.2d.global.shared" in ptx)))
"""


# CI has no GPU: the kernels are compiled to PTX for Ada and Hopper (Triton's bundled ptxas), so a
# kernel that would not compile fails here, not on a user's GPU.
@pytest.mark.parametrize("kernel, operands, capability, wgmma, tma", [
    ("_fp8_gemm_low_rank_kernel", ["*fp8e4nv", "*fp8e4nv", "*bf16"], 89, False, False),
    ("_fp8_gemm_low_rank_kernel", ["*fp8e4nv", "*fp8e4nv", "*bf16"], 90, True, False),
    ("_fp8_gemm_low_rank_tma_kernel", ["tensordesc<fp8e4nv[128, 128]>", "tensordesc<fp8e4nv[256, 128]>",
                                       "tensordesc<bf16[128, 256]>"], 90, True, True)])
def test_kernels_compile_for_ada_and_hopper(kernel, operands, capability, wgmma, tma):
    code = _GPU_COMPILED.format(kernel=kernel, operands=operands, capability=capability)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=600, capture_output=True,
                            text=True)
    # the TMA kernel loads and stores through TMA
    assert json.loads(result.stdout.splitlines()[-1]) == {"wgmma": wgmma, "tma": tma, "tma_store": tma}
