"""Attention with QK^T and PV as FP8 tensor-core products (Hopper and Ada), for the MMDiT's joint attention.

Attention is a third of a compiled SD3.5 Large step on an H200 (cuDNN's bf16 kernel, 34.4 of 81.6 ms,
bench/analysis.md, twenty-first session), and FP8 products run at twice bf16's rate. What is quantized,
each to e4m3fn with the scale that puts its absmax on 448:
- q: each token of each head (one scale a row, folded into the softmax's scale);
- k and v: blocks of BLOCK_N tokens of each head (one scale a block: scalar factors in the loop);
- the softmax's probabilities, computed times 448 against the running row maximum, so they span
  e4m3fn's range; the row sums carry the same factor, which cancels.
The softmax and both products' accumulators are fp32 (Triton's kernel, triton_attention.py).
`fp8_attention_reference` computes the same quantization in torch, with the probabilities against
each row's final maximum: the kernel's online softmax rounds them against running maxima, so the two
differ by rounding, not by more. Registered as the custom op `sd35_fp8::fp8_attention` when first
asked for, opaque to torch.compile (opaque_op.py).
"""
from functools import cache

import torch

from ..scales import FP8_DTYPE, FP8_MAX, absmax_scale
from .opaque_op import OpaqueToCompile

_OP_NAME = "sd35_fp8::fp8_attention"
# SD3.5's (every size); the kernel's tests run it there only
HEAD_DIMS = (64,)


def fp8_attention_on(device: torch.device) -> bool:
    """Whether device has FP8 tensor cores (CUDA, compute capability 8.9 or higher)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_attention_applies(q: torch.Tensor, heads: int) -> bool:
    """Whether the kernel takes q (batch, tokens, heads x head_dim), on a device fp8_attention_on: CUDA,
    16-bit values, a head_dim the kernel holds."""
    return (q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and q.shape[-1] % heads == 0
            and q.shape[-1] // heads in HEAD_DIMS)


def _blocks(t, block):
    """(batch, heads, blocks, block, head_dim) of t (batch, heads, tokens, head_dim), zero-padded."""
    batch, heads, tokens, head_dim = t.shape
    padded = -(-tokens // block) * block
    t = torch.nn.functional.pad(t, (0, 0, 0, padded - tokens))
    return t.reshape(batch, heads, padded // block, block, head_dim)


def _quantized(t, scale):
    return (t / scale).to(FP8_DTYPE).float() * scale


def fp8_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                            block: int = 128) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v with q, k, v and the probabilities quantized as the kernel does
    (fp32 math), for q, k, v (batch, tokens, heads x head_dim); the output in q's dtype and layout."""
    batch, tokens, width = q.shape
    head_dim, dtype = width // heads, q.dtype
    q, k, v = (t.float().reshape(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    q = _quantized(q, absmax_scale(q.abs().amax(dim=-1, keepdim=True)))
    k_blocks, v_blocks = _blocks(k, block), _blocks(v, block)
    k = _quantized(k_blocks, absmax_scale(k_blocks.abs().amax(dim=(-2, -1), keepdim=True))).flatten(2, 3)
    v = _quantized(v_blocks, absmax_scale(v_blocks.abs().amax(dim=(-2, -1), keepdim=True))).flatten(2, 3)
    scores = (q @ k.transpose(-1, -2)) * head_dim ** -0.5
    scores[..., tokens:] = float("-inf")
    scores = scores - scores.amax(dim=-1, keepdim=True)
    probabilities = torch.exp(scores) * FP8_MAX
    out = probabilities.to(FP8_DTYPE).float() @ v / probabilities.sum(dim=-1, keepdim=True)
    return out.transpose(1, 2).reshape(batch, tokens, width).to(dtype)


def _impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    from .triton_attention import fp8_attention_triton
    return fp8_attention_triton(q, k, v, heads)


def _traceable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    from .triton_attention import fp8_attention_triton
    return fp8_attention_triton(q, k, v, heads, wrap=torch.library.wrap_triton)


def _shape(q, k, v, heads):
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@cache
def fp8_attention_op():
    """The op (q, k, v, heads) -> attention output, each (batch, tokens, heads x head_dim), for the
    inputs fp8_attention_applies takes, registered on the first call; take it outside compiled code,
    which then calls it."""
    return OpaqueToCompile(_OP_NAME, _impl, _shape, traceable=_traceable)
