"""What quantized attention would do to accuracy, before any kernel is written: torch computes the
attention with its inputs and probabilities rounded as an FP8 kernel would round them, in fp32
otherwise, installed as ComfyUI's attention override on a model (sd35_bench.py's variants
ours_fp8_attention_fp8_emulated and ours_fp8_attention_int8_qk_emulated). Its speed means nothing.

- "fp8": q each token of each head, k and v in blocks of 128 tokens of each head, to e4m3fn with
  absmax scales; the softmax's probabilities times 448 to e4m3fn (FlashAttention-3's FP8 forward, per
  token and per block).
- "int8": q and k as above but to int8 (127 levels), v and the probabilities as "fp8"
  (SageAttention2's split).
"""
import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
BLOCK = 128
HEADS_AT_ONCE = 8  # bounds the fp32 scores: 2 x 8 x 4250^2 x 4 bytes = 1.2 GB at SD3.5's shape


def _rounded(t, dims, number_format):
    levels = FP8_MAX if number_format == "fp8" else 127.0
    scale = (t.abs().amax(dim=dims, keepdim=True) / levels).clamp_min(torch.finfo(torch.float32).tiny)
    if number_format == "fp8":
        return (t / scale).to(FP8).float() * scale
    return (t / scale).round().clamp(-127, 127) * scale


def _in_blocks(t, number_format):
    batch, heads, tokens, head_dim = t.shape
    padded = -(-tokens // BLOCK) * BLOCK
    blocks = torch.nn.functional.pad(t, (0, 0, 0, padded - tokens)).reshape(batch, heads, -1, BLOCK, head_dim)
    return _rounded(blocks, (-2, -1), number_format).reshape(batch, heads, padded, head_dim)[:, :, :tokens]


def quantized_attention(q, k, v, qk_format="fp8"):
    """softmax(q k^T / sqrt(d)) v for q, k, v (batch, heads, tokens, head_dim), rounded as described."""
    q, k, v = q.float(), k.float(), v.float()
    q = _rounded(q, (-1,), qk_format)
    k, v = _in_blocks(k, qk_format), _in_blocks(v, "fp8")
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    probabilities = torch.exp(scores - scores.amax(dim=-1, keepdim=True)) * FP8_MAX
    return probabilities.to(FP8).float() @ v / probabilities.sum(dim=-1, keepdim=True)


def emulated_attention_override(qk_format):
    """ComfyUI's optimized_attention_override computing quantized_attention (qk_format "fp8" or
    "int8") where ComfyUI would call its attention without a mask."""
    def override(comfy_attention, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        if mask is not None:
            return comfy_attention(q, k, v, heads, mask=mask, attn_precision=attn_precision,
                                   skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape, **kwargs)
        if not skip_reshape:
            batch, _, width = q.shape
            q, k, v = (t.reshape(batch, -1, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        out = torch.cat([quantized_attention(q[:, h:h + HEADS_AT_ONCE], k[:, h:h + HEADS_AT_ONCE],
                                             v[:, h:h + HEADS_AT_ONCE], qk_format)
                         for h in range(0, q.shape[1], HEADS_AT_ONCE)], dim=1).to(q.dtype)
        if skip_output_reshape:
            return out
        return out.transpose(1, 2).reshape(out.shape[0], -1, out.shape[1] * out.shape[3])
    return override
