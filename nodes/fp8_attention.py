"""Our models' attention as FP8 tensor-core products (quant/kernels/fp8_attention.py) where the kernel
takes the call, installed as ComfyUI's `optimized_attention_override` (as nodes/attention_backend.py
installs cuDNN first). Every other call goes to the attention that would have run without it: the
override it replaces, else ComfyUI's own.
"""
from functools import partial

from ..quant.kernels.fp8_attention import fp8_attention_applies, fp8_attention_on, fp8_attention_op
from .attention_backend import CALL_CONTEXT

OVERRIDE_KEY = "optimized_attention_override"


def attention_fp8_first(fp8_attention, fallback, comfy_attention, q, k, v, heads, mask=None, attn_precision=None,
                        skip_reshape=False, skip_output_reshape=False, **kwargs):
    """fp8_attention (the op) for unmasked attention over q, k, v of one shape in ComfyUI's (batch,
    tokens, heads x head_dim) layout, where no precision is asked for (ComfyUI's upcast option);
    fallback(comfy_attention, ...) or comfy_attention(...) otherwise."""
    # ComfyUI's split_qkv leaves v as (batch, tokens, heads, head_dim), which its attention views as ours
    flat_v = v.flatten(2) if v.dim() == 4 else v
    if (mask is None and attn_precision is None and not skip_reshape and not skip_output_reshape
            and not kwargs.keys() - CALL_CONTEXT
            and q.shape == k.shape == flat_v.shape and all(t.stride(-1) == 1 for t in (q, k, flat_v))
            and fp8_attention_applies(q, heads)):
        return fp8_attention(q, k, flat_v, heads)
    arguments = dict(mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                     skip_output_reshape=skip_output_reshape, **kwargs)
    if fallback is None:
        return comfy_attention(q, k, v, heads, **arguments)
    return fallback(comfy_attention, q, k, v, heads, **arguments)


def use_fp8_attention(model_patcher, device) -> bool:
    """Our model's attention through attention_fp8_first, before whichever override it had (a ComfyUI
    ModelPatcher's options; its clones copy them), where device has FP8 tensor cores: whether it did.
    The op is resolved here, outside compiled code, which then calls it."""
    if not fp8_attention_on(device):
        return False
    options = model_patcher.model_options.setdefault("transformer_options", {})
    options[OVERRIDE_KEY] = partial(attention_fp8_first, fp8_attention_op(), options.get(OVERRIDE_KEY))
    return True
