"""FP8 attention (quant/kernels/fp8_attention.py): the Triton kernel run on the CPU by Triton's
interpreter against the reference and fp32 attention (tests/gpu/test_fp8_attention.py runs it compiled
at SD3.5's sizes)."""
import pytest
import torch

from devtools.numerics import relative_error
from devtools.triton_interpreter import run_interpreted
from sd35_fp8.quant.kernels.fp8_attention import fp8_attention_reference

_INTERPRETED = """
import pack_import, torch
from devtools.triton_interpreter import use_torch_fp8_rounding
use_torch_fp8_rounding()
from sd35_fp8.quant.kernels.triton_attention import fp8_attention_triton

generator = torch.Generator().manual_seed(0)
runs = []
# token counts inside one block, across a ragged last block, and a whole number of blocks; near-uniform
# and peaked softmax rows; a query row of zeros
for tokens, heads, magnitude, config in ((40, 1, 1.0, (64, 64, 4, 2)), (300, 2, 3.0, (128, 128, 8, 3)),
                                         (256, 1, 2.0, (64, 128, 4, 2))):
    q, k, v = ((torch.randn(2, tokens, heads * 64, generator=generator) * magnitude).bfloat16() for _ in range(3))
    q[0, 5] = 0
    runs.append(((q, k, v), heads, config, fp8_attention_triton(q, k, v, heads, config=config)))
torch.save(runs, {path!r})
"""


def exact_attention(q, k, v, heads):
    batch, tokens, width = q.shape
    q, k, v = (t.float().reshape(batch, tokens, heads, -1).transpose(1, 2) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, width)


def test_interpreted_kernel_rounds_as_the_reference(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED.format(path=str(path)), timeout=300)
    for (q, k, v), heads, config, out in torch.load(path):
        reference = fp8_attention_reference(q, k, v, heads, block=config[1])
        exact = exact_attention(q, k, v, heads)
        assert out.shape == q.shape and out.dtype == q.dtype and torch.isfinite(out).all()
        # the probabilities round against running row maxima in the kernel, the final ones in the reference
        assert relative_error(out, reference) <= 0.03, config
        assert relative_error(out, exact) <= 1.05 * relative_error(reference, exact) + 1e-3, config


def test_the_reference_is_attention_within_fp8_rounding():
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 200, 128, generator=generator) for _ in range(3))
    reference, exact = fp8_attention_reference(q, k, v, 2), exact_attention(q, k, v, 2)
    # e4m3fn keeps 3 mantissa bits: a few percent, far from a wrong attention (near 100%)
    assert 0.005 <= relative_error(reference, exact) <= 0.1
