"""The few-rows FP8-weight kernel's arithmetic (tiling, masks, scale and bias epilogue), run on
the CPU by Triton's interpreter; tests/gpu runs the compiled kernel (bf16 too: the interpreter
has no bf16)."""

import pytest
import torch

from devtools.numerics import relative_error
from devtools.triton_interpreter import run_interpreted
from sd35_fp8.quant.kernels.small_m_linear import SMALL_M_MAX_ROWS, small_m_linear_reference, use_small_m_kernel

pytest.importorskip("triton", reason="Triton is not installed")

_INTERPRETED = """
import pack_import, torch, triton
from sd35_fp8.quant.kernels.triton_kernels import _small_m_linear_kernel
from sd35_fp8.quant.scales import quantize_weight, FP8_DTYPE
torch.manual_seed({seed})
m, k, n, per_channel, has_bias = {m}, {k}, {n}, {per_channel}, {has_bias}
x = torch.randn(m, k, dtype=torch.float16)
weight_fp8, scale = quantize_weight(torch.randn(n, k) * k ** -0.5, "per_channel" if per_channel else "per_tensor")
bias = torch.randn(n, dtype=torch.float16) if has_bias else None
out = torch.full((m, n), float("nan"), dtype=torch.float16)
grid = (triton.cdiv(n, 32),)
_small_m_linear_kernel.fn[grid](x, weight_fp8, scale.reshape(-1).contiguous(), out if bias is None else bias, out,
                                m, n, k, x.stride(0), PER_CHANNEL=per_channel, HAS_BIAS=has_bias,
                                BLOCK_M=16, BLOCK_N=32, BLOCK_K=64)
torch.save(dict(x=x, weight_fp8=weight_fp8, scale=scale, bias=bias, out=out), {path!r})
"""


@pytest.mark.parametrize("m,k,n,per_channel,has_bias", [(2, 96, 80, True, True), (16, 160, 48, True, False),
                                                        (1, 64, 33, False, True)])
def test_interpreted_kernel_matches_reference(tmp_path, m, k, n, per_channel, has_bias):
    path = tmp_path / "out.pt"
    code = _INTERPRETED.format(seed=m, m=m, k=k, n=n, per_channel=per_channel, has_bias=has_bias, path=str(path))
    run_interpreted(code, timeout=300)
    run = torch.load(path)
    reference = small_m_linear_reference(run["x"].float(), run["weight_fp8"], run["scale"],
                                         None if run["bias"] is None else run["bias"].float())
    assert not torch.isnan(run["out"]).any()  # every element written, masked edges included
    assert relative_error(run["out"], reference) <= 0.002


def test_kernel_is_chosen_for_few_rows_on_cuda_only():
    few = torch.empty(SMALL_M_MAX_ROWS, 8, dtype=torch.bfloat16)
    assert not use_small_m_kernel(few)  # CPU
    if torch.cuda.is_available():
        assert use_small_m_kernel(few.cuda())
        assert not use_small_m_kernel(torch.empty(SMALL_M_MAX_ROWS + 1, 8, dtype=torch.bfloat16, device="cuda"))
        assert not use_small_m_kernel(few.float().cuda())
