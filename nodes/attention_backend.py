"""Our models' attention through torch's SDPA with cuDNN's kernel asked for first, on Hopper GPUs.

ComfyUI 0.33 asks torch for FlashAttention-2 first in every attention call (comfy/ops.py,
SDPA_BACKEND_PRIORITY); 0.3.75 left torch's own order on Linux, which picks cuDNN on Hopper. At
SD3.5's shape (batch 2, 38 heads, 4250 tokens, head dim 64) on an H200 cuDNN's kernel takes 0.867 ms
a layer and FlashAttention-2 1.193, with the same accuracy (issue 11); in an eager Large step on
0.33 the FlashAttention-2 kernel took 44.7 ms of 118 (bench/results/speed_ab9_033_large_gaussian.json).

Installed as ComfyUI's `optimized_attention_override` (transformer_options, read by
comfy/ldm/modules/attention.py's wrap_attn in 0.3.75 and 0.33) on our models only, and only in
place of ComfyUI's own PyTorch attention: an attention the user chose at launch (Sage, xformers,
flash-attn) and calls with a mask stay ComfyUI's. torch falls back to the next backend of the list
where cuDNN's does not take the inputs.
"""
import inspect

import torch
import torch.nn.functional as F
from comfy.ldm.modules import attention
from torch.nn.attention import SDPBackend, sdpa_kernel

# Below this many q elements ComfyUI leaves torch's default order: cuDNN's setup costs more than it saves
SMALL_Q_ELEMENTS = 1024 * 128
CUDNN_FIRST = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
_HOPPER = 9
# what ComfyUI's wrap_attn adds to every call: not options of the attention itself
CALL_CONTEXT = {"transformer_options", "_inside_attn_wrapper"}


def cudnn_attention_applies(device: torch.device) -> bool:
    """Whether our models on device take attention_cudnn_first: Hopper (measured there), and a torch
    whose sdpa_kernel takes a priority order."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != _HOPPER:
        return False
    return "set_priority" in inspect.signature(sdpa_kernel).parameters


def use_cudnn_attention(model_patcher):
    """Our models' attention through attention_cudnn_first (a ComfyUI ModelPatcher's options; its
    clones copy them)."""
    model_patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = \
        attention_cudnn_first


def attention_cudnn_first(comfy_attention, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                          skip_output_reshape=False, **kwargs):
    """ComfyUI's attention_pytorch with cuDNN first in torch's backend order. Anything else ComfyUI's
    comfy_attention computes, calls with options (scale, GQA) included: versions read them differently;
    so do batches ComfyUI splits (SDP_BATCH_LIMIT)."""
    if (comfy_attention.__name__ != "attention_pytorch" or mask is not None or kwargs.keys() - CALL_CONTEXT
            or not q.is_cuda or q.nelement() < SMALL_Q_ELEMENTS or q.shape[0] > attention.SDP_BATCH_LIMIT):
        return comfy_attention(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                               skip_output_reshape=skip_output_reshape, **kwargs)
    with sdpa_kernel(CUDNN_FIRST, set_priority=True):
        return sdpa_in_comfy_layout(q, k, v, heads, skip_reshape, skip_output_reshape)


def sdpa_in_comfy_layout(q, k, v, heads, skip_reshape=False, skip_output_reshape=False):
    """torch's SDPA on ComfyUI's attention layout: q, k, v as (batch, tokens, heads x head dim), or as
    (batch, heads, tokens, head dim) with skip_reshape; the output the same way (skip_output_reshape)."""
    if skip_reshape:
        batch, _, _, head_dim = q.shape
    else:
        batch, _, width = q.shape
        head_dim = width // heads
        q, k, v = (t.reshape(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
    return out if skip_output_reshape else out.transpose(1, 2).reshape(batch, -1, heads * head_dim)
