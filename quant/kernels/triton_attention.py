"""The Triton kernels of FP8 attention (fp8_attention.py holds what they compute and its reference).

Two launches: k and v of every head quantized to e4m3fn in blocks of BLOCK_N tokens, one scale a block
(v written transposed: Hopper's FP8 tensor-core products take both operands contiguous along the
dimension they sum over); then a FlashAttention-2 style pass, one program per BLOCK_M query rows of
one head, quantizing its q rows once (a scale a row), with QK^T and PV as FP8 products accumulated in
fp32 and the softmax in fp32.
"""
import torch
import triton
import triton.language as tl

from ..scales import FP8_DTYPE, FP8_MAX, MIN_SCALE
from .opaque_op import launch_directly

LOG2_E = 1.4426950408889634
# log2(448): the probabilities are computed times 448, so their largest, 1, lands on e4m3fn's largest
# number and small ones stay above its subnormals; the row sums carry the same factor, which cancels
P_SHIFT = 8.807354922057604
# (BLOCK_M, BLOCK_N, warps, stages) by default; bench/fp8_attention_kernels.py sweeps them
DEFAULT_CONFIG = (64, 128, 4, 3)


@triton.jit
def _quantize_kv_blocks_kernel(k_ptr, v_ptr, k8_ptr, v8t_ptr, k_scale_ptr, v_scale_ptr, tokens, padded_tokens, heads,
                               k_batch_stride, k_row_stride, v_batch_stride, v_row_stride, FP8_MAX: tl.constexpr,
                               MIN_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    block = tl.program_id(0)
    batch_head = tl.program_id(1)
    batch = batch_head // heads
    head = batch_head % heads
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, HEAD_DIM)
    inside = rows[:, None] < tokens
    source_rows = rows[:, None].to(tl.int64)
    columns = head * HEAD_DIM + cols[None, :]
    k = tl.load(k_ptr + batch.to(tl.int64) * k_batch_stride + source_rows * k_row_stride + columns,
                mask=inside, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + batch.to(tl.int64) * v_batch_stride + source_rows * v_row_stride + columns,
                mask=inside, other=0.0).to(tl.float32)
    k_scale = tl.maximum(tl.max(tl.max(tl.abs(k), axis=1), axis=0) / FP8_MAX, MIN_SCALE)
    v_scale = tl.maximum(tl.max(tl.max(tl.abs(v), axis=1), axis=0) / FP8_MAX, MIN_SCALE)
    blocks = padded_tokens // BLOCK_N
    tl.store(k_scale_ptr + batch_head * blocks + block, k_scale)
    tl.store(v_scale_ptr + batch_head * blocks + block, v_scale)
    head_base = batch_head.to(tl.int64) * padded_tokens * HEAD_DIM
    tl.store(k8_ptr + head_base + rows[:, None] * HEAD_DIM + cols[None, :], (k / k_scale).to(k8_ptr.dtype.element_ty))
    v8t = tl.trans((v / v_scale).to(v8t_ptr.dtype.element_ty))
    tl.store(v8t_ptr + head_base + cols[:, None] * padded_tokens + rows[None, :], v8t)


@triton.jit
def _attend_block(acc, row_sum, row_max, q8, row_factor, k_head, v_head, k_scale_row, v_scale_row, start_n, tokens,
                  padded_tokens, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr,
                  P_SHIFT: tl.constexpr):
    keys = start_n + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, HEAD_DIM)
    k8t = tl.load(k_head + keys[None, :] * HEAD_DIM + cols[:, None])
    scores = tl.dot(q8, k8t)
    factor = row_factor * tl.load(k_scale_row + start_n // BLOCK_N)
    if MASK:
        scores = tl.where(keys[None, :] < tokens, scores, float("-inf"))
    new_max = tl.maximum(row_max, tl.max(scores, axis=1) * factor)
    p = tl.math.exp2(scores * factor[:, None] - (new_max - P_SHIFT)[:, None])
    alpha = tl.math.exp2(row_max - new_max)
    row_sum = row_sum * alpha + tl.sum(p, axis=1)
    v8t = tl.load(v_head + cols[:, None] * padded_tokens + keys[None, :])
    pv = tl.dot(p.to(v8t.dtype), tl.trans(v8t))
    acc = acc * alpha[:, None] + pv * tl.load(v_scale_row + start_n // BLOCK_N)
    return acc, row_sum, new_max


@triton.jit
def _fp8_attention_kernel(q_ptr, k8_ptr, v8t_ptr, k_scale_ptr, v_scale_ptr, out_ptr, tokens, padded_tokens, heads,
                          q_batch_stride, q_row_stride, out_batch_stride, out_row_stride,
                          SOFTMAX_SCALE: tl.constexpr, FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr,
                          P_SHIFT: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    batch_head = tl.program_id(1)
    batch = batch_head // heads
    head = batch_head % heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, HEAD_DIM)
    inside = rows[:, None] < tokens
    q = tl.load(q_ptr + batch.to(tl.int64) * q_batch_stride + rows[:, None].to(tl.int64) * q_row_stride
                + head * HEAD_DIM + cols[None, :], mask=inside, other=0.0).to(tl.float32)
    q_scale = tl.maximum(tl.max(tl.abs(q), axis=1) / FP8_MAX, MIN_SCALE)
    q8 = (q / q_scale[:, None]).to(k8_ptr.dtype.element_ty)
    # scores in log2 units: exp2 in place of exp. A constant: launched from Inductor's code a float
    # argument arrives as fp64, and every product with it would be fp64
    row_factor = q_scale * SOFTMAX_SCALE
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    head_base = batch_head.to(tl.int64) * padded_tokens * HEAD_DIM
    k_head, v_head = k8_ptr + head_base, v8t_ptr + head_base
    blocks = padded_tokens // BLOCK_N
    k_scale_row, v_scale_row = k_scale_ptr + batch_head * blocks, v_scale_ptr + batch_head * blocks
    full_end = (tokens // BLOCK_N) * BLOCK_N
    for start_n in range(0, full_end, BLOCK_N):
        acc, row_sum, row_max = _attend_block(acc, row_sum, row_max, q8, row_factor, k_head, v_head, k_scale_row,
                                              v_scale_row, start_n, tokens, padded_tokens, HEAD_DIM, BLOCK_N, False,
                                              P_SHIFT)
    if full_end < tokens:
        acc, row_sum, row_max = _attend_block(acc, row_sum, row_max, q8, row_factor, k_head, v_head, k_scale_row,
                                              v_scale_row, full_end, tokens, padded_tokens, HEAD_DIM, BLOCK_N, True,
                                              P_SHIFT)
    out = acc / row_sum[:, None]
    tl.store(out_ptr + batch.to(tl.int64) * out_batch_stride + rows[:, None].to(tl.int64) * out_row_stride
             + head * HEAD_DIM + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=inside)


def quantize_kv_blocks(k: torch.Tensor, v: torch.Tensor, heads: int, block_n: int, wrap=launch_directly):
    """k and v (batch, tokens, heads x head_dim) as e4m3fn in blocks of block_n tokens of each head:
    k8 (batch x heads, padded tokens, head_dim), v8t (batch x heads, head_dim, padded tokens) and their
    fp32 scales (batch x heads, blocks); the padding is zeros."""
    batch, tokens, width = k.shape
    head_dim = int(width) // heads
    padded_tokens = triton.cdiv(tokens, block_n) * block_n
    blocks = padded_tokens // block_n
    k8 = torch.empty((batch * heads, padded_tokens, head_dim), device=k.device, dtype=FP8_DTYPE)
    v8t = torch.empty((batch * heads, head_dim, padded_tokens), device=k.device, dtype=FP8_DTYPE)
    k_scale = torch.empty((batch * heads, blocks), device=k.device, dtype=torch.float32)
    v_scale = torch.empty_like(k_scale)
    wrap(_quantize_kv_blocks_kernel)[(blocks, batch * heads)](
        k, v, k8, v8t, k_scale, v_scale, tokens, padded_tokens, heads, k.stride(0), k.stride(1), v.stride(0),
        v.stride(1), FP8_MAX=FP8_MAX, MIN_SCALE=MIN_SCALE, HEAD_DIM=head_dim, BLOCK_N=block_n, num_warps=4)
    return k8, v8t, k_scale, v_scale


def fp8_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, config=DEFAULT_CONFIG,
                         wrap=launch_directly) -> torch.Tensor:
    """Same as fp8_attention.fp8_attention_reference up to the online softmax's order, for CUDA tensors
    (batch, tokens, heads x head_dim) whose last dimension is contiguous, head_dim a power of two of at
    least 16 (tested at 64). config: (BLOCK_M, BLOCK_N, warps, stages); wrap: the launcher
    (torch.library.wrap_triton inside a triton_op)."""
    block_m, block_n, warps, stages = config
    batch, tokens, width = q.shape
    # a Python int under torch.compile too (it specializes on the width): the kernel's constants derive from it
    head_dim = int(width) // heads
    k8, v8t, k_scale, v_scale = quantize_kv_blocks(k, v, heads, block_n, wrap)
    out = torch.empty((batch, tokens, width), device=q.device, dtype=q.dtype)
    wrap(_fp8_attention_kernel)[(triton.cdiv(tokens, block_m), batch * heads)](
        q, k8, v8t, k_scale, v_scale, out, tokens, k8.shape[1], heads, q.stride(0), q.stride(1), out.stride(0),
        out.stride(1), SOFTMAX_SCALE=head_dim ** -0.5 * LOG2_E, FP8_MAX=FP8_MAX, MIN_SCALE=MIN_SCALE, P_SHIFT=P_SHIFT,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages)
    return out
