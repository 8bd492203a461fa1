"""FP8 attention's override (nodes/fp8_attention.py) inside the real ComfyUI (in-process, CPU): calls the
kernel does not take go to the override it replaced, or to ComfyUI's own attention, with their
arguments; it installs only where the device has FP8 tensor cores; a model that holds it clones as
ComfyUI's nodes clone it (LoraLoader, ModelSamplingSD3). The kernel on the GPU:
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


def test_a_model_holding_the_override_clones(pack):
    """ComfyUI 0.3.x deep-copies a ModelPatcher's options at every clone: the override as use_fp8_attention
    installs it (holding the registered op, whose library cannot be copied) must come through, the same op."""
    from functools import partial
    import comfy.model_patcher
    from sd35_fp8.nodes.fp8_attention import OVERRIDE_KEY, attention_fp8_first
    from sd35_fp8.quant.kernels.fp8_attention import fp8_attention_op
    patcher = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    override = partial(attention_fp8_first, fp8_attention_op(), None)
    patcher.model_options.setdefault("transformer_options", {})[OVERRIDE_KEY] = override
    cloned = patcher.clone().model_options["transformer_options"][OVERRIDE_KEY]
    assert cloned.func is attention_fp8_first and cloned.args[0] is override.args[0]
