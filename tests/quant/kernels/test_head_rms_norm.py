"""The one-pass RMS norm over attention heads (SD3.5's q and k norms), run on the CPU by Triton's
interpreter against torch's rms_norm, on the strided views of a qkv output that the model hands it
(tests/gpu runs it compiled at SD3.5 Large's size)."""
import pytest
import torch
import torch.nn.functional as F

from devtools.triton_interpreter import run_interpreted

_INTERPRETED = """
import pack_import, torch
from sd35_fp8.quant.kernels.triton_kernels import head_rms_norm_triton
generator = torch.Generator().manual_seed(0)
runs = []
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    # qkv as the model's linear writes it, split as ComfyUI's split_qkv does: q, k, v are strided views
    qkv = (torch.randn(2, 37, 3 * 5 * 64, generator=generator) * 3).to(dtype)
    q = qkv.reshape(2, 37, 3, 5, 64).movedim(2, 0)[0]
    q[0, 3] = 0  # a token whose heads are all zero: eps keeps it finite
    weight = (torch.rand(64, generator=generator) + 0.5).to(dtype)
    runs.append((q, weight, head_rms_norm_triton(q, weight, 1e-6), head_rms_norm_triton(q, None, 1e-6)))
torch.save(runs, {path!r})
"""


def test_interpreted_kernel_matches_torch_rms_norm_on_strided_heads(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed")
    path = tmp_path / "runs.pt"
    run_interpreted(_INTERPRETED.format(path=str(path)), timeout=300)
    for q, weight, with_weight, without_weight in torch.load(path):
        assert not q.is_contiguous() and with_weight.is_contiguous() and with_weight.shape == q.shape
        # The kernel rounds once from fp32. torch's rms_norm on the CPU rounds the normalized value,
        # then its product with the weight: in bf16 and fp16 an ulp apart at most, the kernel the closer
        # to fp64; in fp32 a few ulps apart (the order of the sums, rsqrt).
        ulp = torch.finfo(q.dtype).eps
        tolerance = 1e-6 if q.dtype == torch.float32 else ulp
        reference = F.rms_norm(q, (64,), weight=weight, eps=1e-6)
        torch.testing.assert_close(with_weight, reference, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(without_weight, F.rms_norm(q, (64,), eps=1e-6), rtol=tolerance, atol=tolerance)
        exact = F.rms_norm(q.double(), (64,), weight=weight.double(), eps=1e-6)
        kernel_error, torch_error = ((out.double() - exact).abs().max() for out in (with_weight, reference))
        assert kernel_error <= max(torch_error, 4 * ulp * exact.abs().max())
        assert not with_weight[0, 3].any()
