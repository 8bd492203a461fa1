"""FP8 attention's override (nodes/fp8_attention.py) inside the real ComfyUI (in-process, CPU): calls the
kernel does not take go to the override it replaced, or to ComfyUI's own attention, with their
arguments; it installs only where the device has FP8 tensor cores. The kernel on the GPU:
tests/gpu/test_fp8_attention.py."""

import torch


def _qkv():
    return [torch.randn(2, 40, 64) for _ in range(3)]


def _kernel(*args):
    raise AssertionError("the FP8 kernel was called for a call it does not take")


def test_calls_the_kernel_does_not_take_go_on(pack):
    from comfy.ldm.modules.attention import attention_pytorch
    from sd35_fp8.nodes.fp8_attention import attention_fp8_first
    passed_on = []

    def replaced(comfy_attention, q, k, v, heads, **kwargs):
        passed_on.append(kwargs)
        return comfy_attention(q, k, v, heads, **kwargs)
    q, k, v = _qkv()
    mask = torch.zeros(40, 40)
    # on the CPU, and with a mask: the replaced override, with every argument
    out = attention_fp8_first(_kernel, replaced, attention_pytorch, q, k, v, 2, mask=mask, skip_output_reshape=True)
    assert passed_on == [{"mask": mask, "attn_precision": None, "skip_reshape": False, "skip_output_reshape": True}]
    torch.testing.assert_close(out, attention_pytorch(q, k, v, 2, mask=mask, skip_output_reshape=True))
    # no override before it: ComfyUI's attention
    out = attention_fp8_first(_kernel, None, attention_pytorch, q, k, v, 2)
    torch.testing.assert_close(out, attention_pytorch(q, k, v, 2))


def test_installs_only_with_fp8_tensor_cores(pack):
    from sd35_fp8.nodes.fp8_attention import OVERRIDE_KEY, use_fp8_attention

    class Patcher:
        model_options = {"transformer_options": {OVERRIDE_KEY: "before"}}
    assert not use_fp8_attention(Patcher, torch.device("cpu"))
    assert Patcher.model_options["transformer_options"][OVERRIDE_KEY] == "before"
