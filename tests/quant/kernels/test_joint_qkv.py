"""The joint attention's inputs in one pass (quant/kernels/joint_qkv.py): the Triton kernel run on the CPU
by Triton's interpreter against the reference (tests/nodes/test_joint_qkv_block.py holds the reference
against ComfyUI's own block mixing; tests/gpu runs the kernel compiled at SD3.5's sizes)."""
import pytest
import torch

from devtools.triton_interpreter import run_interpreted
from sd35_fp8.quant.kernels.joint_qkv import joint_qkv

_INTERPRETED = """
import pack_import, torch
from sd35_fp8.quant.kernels.triton_kernels import joint_qkv_triton

def streams(batch, context_tokens, x_tokens, heads, head_dim, dtype, generator):
    def qkv(tokens):
        return (torch.randn(batch, tokens, 3 * heads * head_dim, generator=generator) * 3).to(dtype)

    def norm():
        return (torch.rand(head_dim, generator=generator) + 0.5).to(dtype)
    return qkv(context_tokens), qkv(x_tokens), norm(), norm(), norm(), norm()

generator = torch.Generator().manual_seed(0)
runs = []
# ragged token counts; heads below a power of two (masked); a context token whose q is all zero
for batch, context_tokens, x_tokens, heads, head_dim, dtype in ((2, 5, 9, 3, 64, torch.float16),
                                                               (1, 3, 4, 4, 32, torch.float32)):
    inputs = streams(batch, context_tokens, x_tokens, heads, head_dim, dtype, generator)
    inputs[0][0, 1, : heads * head_dim] = 0
    runs.append((inputs, head_dim, joint_qkv_triton(*inputs, head_dim, 1e-6)))
torch.save(runs, {path!r})
"""


def test_interpreted_kernel_matches_the_reference(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED.format(path=str(path)), timeout=300)
    for inputs, head_dim, out in torch.load(path):
        reference = joint_qkv(*inputs, head_dim, 1e-6)
        assert out.shape == reference.shape
        # v is copied; q and k round once from fp32, as torch's rms_norm (see test_head_rms_norm.py)
        assert torch.equal(out[2], reference[2])
        ulp = torch.finfo(out.dtype).eps
        tolerance = 1e-6 if out.dtype == torch.float32 else ulp
        torch.testing.assert_close(out[:2], reference[:2], rtol=tolerance, atol=tolerance)
        assert not out[0, 0, 1].any()  # the zero q of a context token: eps keeps it finite, zero
