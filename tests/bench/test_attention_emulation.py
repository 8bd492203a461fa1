"""bench/attention_emulation.py: the rounding it emulates is attention's within FP8's few percent, int8 q
and k round closer than e4m3fn's, and the override keeps ComfyUI's layouts and masked calls."""
import torch

from bench.attention_emulation import emulated_attention_override, quantized_attention
from devtools.numerics import relative_error


def _heads_first(generator, magnitude, tokens=300):
    return [torch.randn(2, 3, tokens, 64, generator=generator) * magnitude for _ in range(3)]


def test_rounded_attention_is_attention_within_a_few_percent():
    q, k, v = _heads_first(torch.Generator().manual_seed(0), 3.0)  # peaked softmax rows
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    fp8, int8 = (relative_error(quantized_attention(q, k, v, f), exact) for f in ("fp8", "int8"))
    assert 0.01 <= int8 < fp8 <= 0.2


def test_the_override_keeps_comfyuis_layout_and_masked_calls():
    from devtools.comfy_host import import_comfy_in_process
    import_comfy_in_process()
    from comfy.ldm.modules.attention import attention_pytorch
    q, k, v = (t.transpose(1, 2).reshape(2, 300, 192) for t in _heads_first(torch.Generator().manual_seed(1), 1.0))
    override = emulated_attention_override("fp8")
    out = override(attention_pytorch, q, k, v, 3)
    assert out.shape == q.shape
    assert relative_error(out, attention_pytorch(q, k, v, 3)) <= 0.1
    mask = torch.zeros(300, 300)
    torch.testing.assert_close(override(attention_pytorch, q, k, v, 3, mask=mask),
                               attention_pytorch(q, k, v, 3, mask=mask))
