"""Single-pass Triton kernels for eager CUDA. torch's own ops take several passes over memory
(abs-max, divide, cast; or cast, multiply) and cost as much as the GEMM they feed. Under
torch.compile the plain-torch versions in fp8_linear.py are used where Inductor fuses them in one
pass itself; the row-wise quantizations of rows wider than its one-pass limit, GELU + quantization
before an MLP's fc2 and a block's layer norm + modulation + quantization, which Inductor does in
several passes over each row, run here in both modes (row_quantize.py, gelu_quantize.py,
norm_quantize.py)."""
import torch
import triton
import triton.language as tl

from ..scales import FP8_DTYPE, FP8_MAX, MIN_SCALE
from .opaque_op import launch_directly


@triton.jit
def _gelu_tanh(x):
    # torch's tanh GELU, 0.5 x (1 + tanh(u)) with u = sqrt(2 / pi) (x + 0.044715 x^3), written as
    # x * sigmoid(2 u): the same function, without the cancellation in 1 + tanh(u) for negative x,
    # and with exp, which Triton's interpreter (the CPU tests) has where it has no tanh.
    return x / (1.0 + tl.exp(-1.5957691216057308 * (x + 0.044715 * x * x * x)))


@triton.jit
def _gelu_quantize_rows_kernel(x_ptr, out_ptr, scale_ptr, n_cols, x_row_stride, FP8_MAX: tl.constexpr,
                               MIN_SCALE: tl.constexpr, HEAD: tl.constexpr, TAIL: tl.constexpr):
    # One program per row, held in registers as a power-of-two head and a masked power-of-two tail
    # (TAIL 0: none). One power-of-two block would pad SD3.5 Large's 9728 columns to 16384: 129 us
    # for 8500 rows on an H200 against 83 us split 8192 + 2048 (measured).
    row = tl.program_id(0).to(tl.int64)
    x_row, out_row = x_ptr + row * x_row_stride, out_ptr + row * n_cols
    head = tl.arange(0, HEAD)
    gelu = _gelu_tanh(tl.load(x_row + head).to(tl.float32))
    absmax = tl.max(tl.abs(gelu), axis=0)
    if TAIL > 0:
        tail = HEAD + tl.arange(0, TAIL)
        # masked columns load 0, GELU(0) = 0: they leave the abs-max alone
        gelu_tail = _gelu_tanh(tl.load(x_row + tail, mask=tail < n_cols, other=0.0).to(tl.float32))
        absmax = tl.maximum(absmax, tl.max(tl.abs(gelu_tail), axis=0))
    scale = tl.maximum(absmax / FP8_MAX, MIN_SCALE)
    tl.store(out_row + head, tl.clamp(gelu / scale, -FP8_MAX, FP8_MAX).to(out_ptr.dtype.element_ty))
    if TAIL > 0:
        tl.store(out_row + tail, tl.clamp(gelu_tail / scale, -FP8_MAX, FP8_MAX).to(out_ptr.dtype.element_ty),
                 mask=tail < n_cols)
    tl.store(scale_ptr + row, scale)


# On an H200 at SD3.5's 9728 columns 79.3 us in 4 warps against 79.7 in 8, at 6144 47.2 against 52.0;
# 16 and 32 slower (bench/results/kernels_rows.json)
_GELU_WARPS = 4


def _next_power_of_2(n):
    """triton.next_power_of_2 (n >= 1) in plain Python: Triton's is a constexpr function, whose host calls go
    through its JIT's argument unwrapping (3.3 us a call against 0.13 on a CI core, Triton 3.8), and most of our
    launchers make one or two on every call (an eager SD3.5 Large step profiled 491 such calls, 795 with a LoRA,
    Triton 3.6: bench/analysis_lora.md, thirty-fourth session)."""
    return 1 << (n - 1).bit_length()


def _head_and_tail(cols):
    """cols as a power-of-two head and a power-of-two tail that covers the rest (0: none): one
    power-of-two block would pad SD3.5 Large's 2432 columns to 4096 and its MLP's 9728 to 16384."""
    head = 1 << (cols.bit_length() - 1)
    return head, 0 if head == cols else _next_power_of_2(cols - head)


def gelu_quantize_rows_triton(x2d: torch.Tensor, wrap=launch_directly):
    """Same result as gelu_quantize.gelu_quantize_rows (GELU in fp32, then row-wise FP8), for a CUDA
    tensor: one read of the input, one write of the fp8 values. wrap: the kernel's launcher
    (torch.library.wrap_triton inside a triton_op)."""
    rows, cols = x2d.shape
    if x2d.stride(1) != 1:
        x2d = x2d.contiguous()
    out = torch.empty((rows, cols), device=x2d.device, dtype=FP8_DTYPE)
    scale = torch.empty((rows, 1), device=x2d.device, dtype=torch.float32)
    head, tail = _head_and_tail(cols)
    wrap(_gelu_quantize_rows_kernel)[(rows,)](x2d, out, scale, cols, x2d.stride(0), FP8_MAX=FP8_MAX,
                                              MIN_SCALE=MIN_SCALE, HEAD=head, TAIL=tail, num_warps=_GELU_WARPS)
    return out, scale


@triton.jit
def _dequantize_kernel(w_ptr, scale_ptr, out_ptr, n_cols, PER_CHANNEL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    scale = tl.load(scale_ptr + row) if PER_CHANNEL else tl.load(scale_ptr)
    w = tl.load(w_ptr + row * n_cols + cols, mask=mask).to(tl.float32)
    tl.store(out_ptr + row * n_cols + cols, (w * scale).to(out_ptr.dtype.element_ty), mask=mask)


def dequantize_triton(weight_fp8: torch.Tensor, weight_scale: torch.Tensor, dtype):
    """weight_fp8 * weight_scale in `dtype`, one read of the fp8 weight and one write."""
    rows, cols = weight_fp8.shape
    out = torch.empty((rows, cols), device=weight_fp8.device, dtype=dtype)
    block = 1024
    _dequantize_kernel[(rows, triton.cdiv(cols, block))](
        weight_fp8, weight_scale.float().contiguous(), out, cols, PER_CHANNEL=weight_scale.numel() > 1,
        BLOCK=block, num_warps=4)
    return out


# Few rows: the weight read is the whole cost, so many small column blocks (hundreds of programs
# in flight, each streaming its rows of the weight) rather than GEMM-sized tiles.
_SMALL_M_CONFIGS = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                    for bn, bk, w, s in ((16, 256, 2, 4), (16, 512, 4, 3), (32, 256, 4, 4), (32, 512, 4, 3),
                                         (64, 128, 4, 4), (64, 256, 4, 3))]


@triton.autotune(configs=_SMALL_M_CONFIGS, key=["N", "K"])
@triton.jit
def _small_m_linear_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, M, N, K, x_row_stride,
                           PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.arange(0, BLOCK_M)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        x = tl.load(x_ptr + rows[:, None] * x_row_stride + k[None, :],
                    mask=(rows[:, None] < M) & (k[None, :] < K), other=0.0)
        w = tl.load(w_ptr + cols[:, None].to(tl.int64) * K + k[None, :],
                    mask=(cols[:, None] < N) & (k[None, :] < K), other=0.0)
        # fp8 -> fp16/bf16 is exact, so the products are exact and the sums fp32.
        acc = tl.dot(x, tl.trans(w.to(tl.float32).to(x.dtype)), acc)
    scale = tl.load(scale_ptr + cols, mask=cols < N, other=0.0) if PER_CHANNEL else tl.load(scale_ptr)
    acc = acc * scale[None, :] if PER_CHANNEL else acc * scale
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rows[:, None] * N + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(rows[:, None] < M) & (cols[None, :] < N))


def small_m_linear_triton(x2d: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias,
                          block_rows: int, wrap=launch_directly):
    """x2d @ (weight_fp8 * weight_scale).T + bias in x2d's dtype (fp16 or bf16), for at most
    block_rows rows (one row block: small_m_linear.SMALL_M_MAX_ROWS). wrap: the kernel's launcher
    (torch.library.wrap_triton inside a triton_op)."""
    rows, k = x2d.shape
    if rows > block_rows:
        raise ValueError(f"small_m_linear_triton takes at most {block_rows} rows, not {rows}")
    n = weight_fp8.shape[0]
    if x2d.stride(1) != 1:
        x2d = x2d.contiguous()
    out = torch.empty((rows, n), device=x2d.device, dtype=x2d.dtype)
    scale = weight_scale.float().reshape(-1).contiguous()
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    # without a bias, bias_ptr is never read: any tensor but the output, which a traced launch
    # must see written through one argument only
    wrap(_small_m_linear_kernel)[grid](x2d, weight_fp8.contiguous(), scale, x2d if bias is None else bias, out, rows,
                                       n, k, x2d.stride(0), PER_CHANNEL=scale.numel() > 1, HAS_BIAS=bias is not None,
                                       BLOCK_M=block_rows)
    return out


@triton.jit
def _head_rms_norm_kernel(x_ptr, weight_ptr, out_ptr, n_rows, heads, tokens, batch_stride, token_stride, head_stride,
                          eps, HAS_WEIGHT: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    # Many heads per program: a 64-wide row is 128 bytes, far too little work for a program of its own.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    mask = rows < n_rows
    head, token, batch = rows % heads, (rows // heads) % tokens, rows // (heads * tokens)
    starts = batch * batch_stride + token * token_stride + head * head_stride
    cols = tl.arange(0, HEAD_DIM)
    x = tl.load(x_ptr + starts[:, None] + cols[None, :], mask=mask[:, None], other=0.0).to(tl.float32)
    y = x * tl.rsqrt(tl.sum(x * x, axis=1) / HEAD_DIM + eps)[:, None]
    if HAS_WEIGHT:
        y = y * tl.load(weight_ptr + cols).to(tl.float32)[None, :]
    tl.store(out_ptr + rows[:, None] * HEAD_DIM + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask[:, None])


def head_rms_norm_triton(x: torch.Tensor, weight, eps: float):
    """torch.nn.functional.rms_norm over the last dimension of x (batch, tokens, heads, head_dim), for a
    CUDA tensor whose last dimension is contiguous and a power of two; weight: None or (head_dim,) in
    x's dtype. The heads of q and k arrive as strided views of the qkv output: read in place, written
    contiguous."""
    batch, tokens, heads, head_dim = x.shape
    out = torch.empty((batch, tokens, heads, head_dim), device=x.device, dtype=x.dtype)
    n_rows, block_rows = batch * tokens * heads, 64
    _head_rms_norm_kernel[(triton.cdiv(n_rows, block_rows),)](
        x, out if weight is None else weight, out, n_rows, heads, tokens, x.stride(0), x.stride(1), x.stride(2), eps,
        HAS_WEIGHT=weight is not None, HEAD_DIM=head_dim, BLOCK_ROWS=block_rows, num_warps=4)
    return out


@triton.jit
def _joint_qkv_stream(qkv_ptr, q_weight_ptr, k_weight_ptr, out_ptr, plane, width, heads, EPS: tl.constexpr,
                      HEAD_DIM: tl.constexpr, HEADS: tl.constexpr):
    # one token: q and k normalized per head (the same tile and sums as _head_rms_norm_kernel), v copied
    head = tl.arange(0, HEADS)
    cols = tl.arange(0, HEAD_DIM)
    inside = (head < heads)[:, None]
    offsets = head[:, None] * HEAD_DIM + cols[None, :]
    for part in tl.static_range(3):
        values = tl.load(qkv_ptr + part * width + offsets, mask=inside, other=0.0)
        if part < 2:
            weight = tl.load((q_weight_ptr if part == 0 else k_weight_ptr) + cols).to(tl.float32)
            x = values.to(tl.float32)
            y = x * tl.rsqrt(tl.sum(x * x, axis=1) / HEAD_DIM + EPS)[:, None]
            values = (y * weight[None, :]).to(values.dtype)
        tl.store(out_ptr + part * plane + offsets, values, mask=inside)


@triton.jit
def _joint_qkv_kernel(context_ptr, x_ptr, context_q_weight_ptr, context_k_weight_ptr, x_q_weight_ptr, x_k_weight_ptr,
                      out_ptr, context_tokens, x_tokens, width, heads, plane, EPS: tl.constexpr,
                      HEAD_DIM: tl.constexpr, HEADS: tl.constexpr):
    # one token of the joint sequence per program: the context's tokens first, then the image's
    token = tl.program_id(0).to(tl.int64)
    tokens = context_tokens + x_tokens
    sample, position = token // tokens, token % tokens
    out = out_ptr + token * width
    if position < context_tokens:
        _joint_qkv_stream(context_ptr + (sample * context_tokens + position) * 3 * width, context_q_weight_ptr,
                          context_k_weight_ptr, out, plane, width, heads, EPS, HEAD_DIM, HEADS)
    else:
        _joint_qkv_stream(x_ptr + (sample * x_tokens + position - context_tokens) * 3 * width, x_q_weight_ptr,
                          x_k_weight_ptr, out, plane, width, heads, EPS, HEAD_DIM, HEADS)


def joint_qkv_triton(context_qkv: torch.Tensor, x_qkv: torch.Tensor, context_q_weight: torch.Tensor,
                     context_k_weight: torch.Tensor, x_q_weight: torch.Tensor, x_k_weight: torch.Tensor, head_dim: int,
                     eps: float, wrap=launch_directly):
    """Same result as joint_qkv.joint_qkv, for contiguous CUDA tensors with a head_dim that is a power of
    two. wrap: the kernel's launcher (torch.library.wrap_triton inside a triton_op)."""
    batch, context_tokens, width3 = context_qkv.shape
    x_tokens, width = x_qkv.shape[1], width3 // 3
    tokens = context_tokens + x_tokens
    out = torch.empty((3, batch, tokens, width), device=context_qkv.device, dtype=context_qkv.dtype)
    heads = width // head_dim
    wrap(_joint_qkv_kernel)[(batch * tokens,)](
        context_qkv, x_qkv, context_q_weight, context_k_weight, x_q_weight, x_k_weight, out, context_tokens, x_tokens,
        width, heads, batch * tokens * width, EPS=eps, HEAD_DIM=head_dim, HEADS=_next_power_of_2(heads),
        num_warps=4)
    return out


@triton.jit
def _layer_norm_modulate_quantize_rows_kernel(x_ptr, shift_ptr, scale_ptr, out_ptr, out_scale_ptr, n_cols, tokens,
                                              x_row_stride, out_row_stride, shift_row_stride, scale_row_stride,
                                              EPS: tl.constexpr, FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr,
                                              ROWS: tl.constexpr, HEAD: tl.constexpr, TAIL: tl.constexpr):
    # ROWS tokens of one sample per program
    _norm_modulate_quantize(x_ptr, shift_ptr, scale_ptr, out_ptr, out_scale_ptr, n_cols, tokens, x_row_stride,
                            out_row_stride, shift_row_stride, scale_row_stride, EPS, FP8_MAX, MIN_SCALE, ROWS, HEAD,
                            TAIL)


@triton.jit
def _layer_norm_modulate_quantize_rows_down_kernel(x_ptr, shift_ptr, scale_ptr, out_ptr, out_scale_ptr, down_ptr,
                                                   low_ptr, n_cols, tokens, rank, x_row_stride, out_row_stride,
                                                   shift_row_stride, scale_row_stride, EPS: tl.constexpr,
                                                   FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr,
                                                   HEAD: tl.constexpr, TAIL: tl.constexpr, RANK_BLOCK: tl.constexpr):
    # One token per program, normalized, modulated and quantized as above; then the LoRA's down projection
    # (rank, cols) of its FP8 row, held in registers, RANK_BLOCK ranks at a time: a row's sums against the
    # down factor, which stays in L2, instead of a kernel of its own that reads the rows back.
    q, q_tail, row_scale = _norm_modulate_quantize(x_ptr, shift_ptr, scale_ptr, out_ptr, out_scale_ptr, n_cols,
                                                   tokens, x_row_stride, out_row_stride, shift_row_stride,
                                                   scale_row_stride, EPS, FP8_MAX, MIN_SCALE, 1, HEAD, TAIL)
    row = tl.program_id(0).to(tl.int64)
    head = tl.arange(0, HEAD)
    head_inside = head < n_cols
    # the FP8 values as the GEMM sees them; fp8 -> fp32 is exact
    q = q.to(tl.float32)
    row_scale = tl.max(row_scale, axis=0)
    if TAIL > 0:
        tail = HEAD + tl.arange(0, TAIL)
        tail_inside = tail < n_cols
        q_tail = q_tail.to(tl.float32)
    for start in range(0, rank, RANK_BLOCK):
        ranks = start + tl.arange(0, RANK_BLOCK)
        ranks_inside = ranks < rank
        down = tl.load(down_ptr + ranks[:, None] * n_cols + head[None, :],
                       mask=ranks_inside[:, None] & head_inside[None, :], other=0.0).to(tl.float32)
        sums = tl.sum(q * down, axis=1)
        if TAIL > 0:
            down_tail = tl.load(down_ptr + ranks[:, None] * n_cols + tail[None, :],
                                mask=ranks_inside[:, None] & tail_inside[None, :], other=0.0).to(tl.float32)
            sums += tl.sum(q_tail * down_tail, axis=1)
        tl.store(low_ptr + row * rank + ranks, (sums * row_scale).to(low_ptr.dtype.element_ty), mask=ranks_inside)


@triton.jit
def _norm_modulate_quantize(x_ptr, shift_ptr, scale_ptr, out_ptr, out_scale_ptr, n_cols, tokens, x_row_stride,
                            out_row_stride, shift_row_stride, scale_row_stride, EPS: tl.constexpr,
                            FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr, ROWS: tl.constexpr, HEAD: tl.constexpr,
                            TAIL: tl.constexpr):
    # ROWS tokens of one sample (this program's), held in registers as a power-of-two head and a masked
    # power-of-two tail (TAIL 0: none): each row read once, written once as FP8. EPS is a constant:
    # launched from Inductor's code a float argument arrives as fp64, whose rsqrt Triton 3.6 fails
    # to lower ("PassManager::run failed" in make_llir on an H200). Returns the FP8 values written (head,
    # tail: the head again where there is none) and the rows' scales.
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    sample = (tl.program_id(0).to(tl.int64) * ROWS) // tokens
    head = tl.arange(0, HEAD)
    head_inside = head < n_cols
    x = tl.load(x_ptr + rows[:, None] * x_row_stride + head[None, :], mask=head_inside[None, :], other=0.0)
    x = x.to(tl.float32)
    total = tl.sum(x, axis=1)
    if TAIL > 0:
        tail = HEAD + tl.arange(0, TAIL)
        tail_inside = tail < n_cols
        x_tail = tl.load(x_ptr + rows[:, None] * x_row_stride + tail[None, :], mask=tail_inside[None, :], other=0.0)
        x_tail = x_tail.to(tl.float32)
        total += tl.sum(x_tail, axis=1)
    mean = total / n_cols
    centered = tl.where(head_inside[None, :], x - mean[:, None], 0.0)
    squares = tl.sum(centered * centered, axis=1)
    if TAIL > 0:
        centered_tail = tl.where(tail_inside[None, :], x_tail - mean[:, None], 0.0)
        squares += tl.sum(centered_tail * centered_tail, axis=1)
    rstd = tl.rsqrt(squares / n_cols + EPS)
    # masked columns: 0 * (1 + 0) + 0, which leaves the abs-max alone
    shift = tl.load(shift_ptr + sample * shift_row_stride + head, mask=head_inside, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + sample * scale_row_stride + head, mask=head_inside, other=0.0).to(tl.float32)
    y = centered * rstd[:, None] * (1 + scale[None, :]) + shift[None, :]
    absmax = tl.max(tl.abs(y), axis=1)
    if TAIL > 0:
        shift_tail = tl.load(shift_ptr + sample * shift_row_stride + tail, mask=tail_inside, other=0.0).to(tl.float32)
        scale_tail = tl.load(scale_ptr + sample * scale_row_stride + tail, mask=tail_inside, other=0.0).to(tl.float32)
        y_tail = centered_tail * rstd[:, None] * (1 + scale_tail[None, :]) + shift_tail[None, :]
        absmax = tl.maximum(absmax, tl.max(tl.abs(y_tail), axis=1))
    row_scale = tl.maximum(absmax / FP8_MAX, MIN_SCALE)
    out_rows = out_ptr + rows[:, None] * out_row_stride
    q = tl.clamp(y / row_scale[:, None], -FP8_MAX, FP8_MAX).to(out_ptr.dtype.element_ty)
    tl.store(out_rows + head[None, :], q, mask=head_inside[None, :])
    q_tail = q
    if TAIL > 0:
        q_tail = tl.clamp(y_tail / row_scale[:, None], -FP8_MAX, FP8_MAX).to(out_ptr.dtype.element_ty)
        tl.store(out_rows + tail[None, :], q_tail, mask=tail_inside[None, :])
    tl.store(out_scale_ptr + rows, row_scale)
    return q, q_tail, row_scale


# Elements of x one program of the quantization kernel holds, in 4 warps. On an H200, 2 x 4096 tokens
# of SD3.5 Medium (1536 columns): one row a program in 8 warps 25.9 us; in 4 warps, 4 rows 16.2 us and
# 8 rows 16.3 and 20.9 us in two runs; Large (2432): 39.8 us against 32.4 and 32.6 us with 4 rows.
# 8 warps were slower at 1, 2, 4 and 8 rows, both sizes (timed with the norm kernel, the same loads).
_ROW_TILE_ELEMENTS = 16384
# The norm kernel's: 2 warps and one row a program at Large's 2432 columns (28.2 us against 30.8 with
# 4 rows in 4 warps), two at Medium's 1536 (15.8 us; its best, 4 rows, 14.9). An H200's sweep of 1 to
# 8 rows in 2 to 16 warps (bench/results/kernels_rows.json, bench/row_kernels.py): 2 warps fastest
# at every row count at Large, and within 0.2 us at Medium.
_NORM_TILE_ELEMENTS, _NORM_WARPS = 4096, 2
# The norm with a LoRA's down projection: 4 ranks of the down factor at a time beside the row, in 4 warps
# (64 fp32 registers a thread for those ranks at Large's 2048-column head). On an H100, Large's context stream
# (308 rows, rank 16) 10.1 us against 3.9 for the norm alone and 5.8 for the down kernel after it; 8192 rows
# 140 us, where each row's program reads the whole down factor: few rows only (bench/results/kernels_lora33_h100.json).
_DOWN_RANK_BLOCK, _NORM_DOWN_WARPS = 4, 4


def _rows_per_program(rows_in_all, cols, tile_elements=_ROW_TILE_ELEMENTS):
    """The most rows, a power of two dividing rows_in_all (so no program runs past the end), whose
    elements fit tile_elements; at least one."""
    rows = 1
    while 2 * rows * cols <= tile_elements and rows_in_all % (2 * rows) == 0:
        rows *= 2
    return rows


@triton.jit
def _quantize_rows_kernel(x_ptr, out_ptr, scale_ptr, n_cols, tokens, x_batch_stride, x_token_stride,
                          FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr, ROWS: tl.constexpr, HEAD: tl.constexpr,
                          TAIL: tl.constexpr):
    # ROWS rows per program, held in registers as a power-of-two head and a masked power-of-two tail
    # (TAIL 0: none): each row read once, from wherever it lies (a token of a slice of the joint
    # attention's output, whose batch stride is not tokens * row), written once as FP8.
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    starts = (rows // tokens) * x_batch_stride + (rows % tokens) * x_token_stride
    head = tl.arange(0, HEAD)
    x = tl.load(x_ptr + starts[:, None] + head[None, :]).to(tl.float32)
    absmax = tl.max(tl.abs(x), axis=1)
    if TAIL > 0:
        tail = HEAD + tl.arange(0, TAIL)
        tail_inside = tail < n_cols
        x_tail = tl.load(x_ptr + starts[:, None] + tail[None, :], mask=tail_inside[None, :], other=0.0).to(tl.float32)
        absmax = tl.maximum(absmax, tl.max(tl.abs(x_tail), axis=1))
    scale = tl.maximum(absmax / FP8_MAX, MIN_SCALE)
    out_rows = out_ptr + rows[:, None] * n_cols
    tl.store(out_rows + head[None, :], tl.clamp(x / scale[:, None], -FP8_MAX, FP8_MAX).to(out_ptr.dtype.element_ty))
    if TAIL > 0:
        tl.store(out_rows + tail[None, :], tl.clamp(x_tail / scale[:, None], -FP8_MAX, FP8_MAX).to(out_ptr.dtype.element_ty),
                 mask=tail_inside[None, :])
    tl.store(scale_ptr + rows, scale)


def quantize_rows_triton(x: torch.Tensor, wrap=launch_directly):
    """Same result as fp8_linear.quantize_rows, for a CUDA tensor x (..., cols): fp8 values (rows, cols)
    and fp32 scales (rows, 1). Rows are read where they lie as long as the last dimension is
    contiguous: no copy of a slice of the tokens. wrap: the kernel's launcher
    (torch.library.wrap_triton inside a triton_op)."""
    cols = x.shape[-1]
    x3d = x.reshape(-1, x.shape[-2], cols) if x.dim() > 2 else x.reshape(1, -1, cols)
    if x3d.stride(2) != 1:
        x3d = x3d.contiguous()
    batch, tokens, _ = x3d.shape
    rows = batch * tokens
    out = torch.empty((rows, cols), device=x.device, dtype=FP8_DTYPE)
    scale = torch.empty((rows, 1), device=x.device, dtype=torch.float32)
    rows_per_program = _rows_per_program(rows, cols)
    head, tail = _head_and_tail(cols)
    # rows as wide as an MLP's hidden layer: 8 warps, the GELU kernel's measured best at 6144-9728 columns
    num_warps = 8 if head + tail > 4096 else 4
    wrap(_quantize_rows_kernel)[(rows // rows_per_program,)](
        x3d, out, scale, cols, tokens, x3d.stride(0), x3d.stride(1), FP8_MAX=FP8_MAX, MIN_SCALE=MIN_SCALE,
        ROWS=rows_per_program, HEAD=head, TAIL=tail, num_warps=num_warps)
    return out, scale


def layer_norm_modulate_quantize_rows_triton(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                                             columns: int = 0, wrap=launch_directly):
    """Same result as norm_quantize.layer_norm_modulate_quantize_rows, for CUDA tensors: x (batch,
    tokens, channels) with contiguous rows, shift and scale (batch, channels) with contiguous rows
    (chunks of the adaLN output). One read of x, one write of the fp8 values. columns: room for that
    many more FP8 values after each row, left unwritten (a LoRA's columns, fp8_rows_columns_triton).
    wrap: the kernel's launcher (torch.library.wrap_triton inside a triton_op)."""
    x, shift, scale, out, out_scale = _norm_operands(x, shift, scale, columns)
    batch, tokens, cols = x.shape
    # rows of one sample per program: they share its shift and scale
    rows_per_program = _rows_per_program(tokens, cols, _NORM_TILE_ELEMENTS)
    head, tail = _head_and_tail(cols)
    wrap(_layer_norm_modulate_quantize_rows_kernel)[(batch * tokens // rows_per_program,)](
        x, shift, scale, out, out_scale, cols, tokens, x.stride(1), out.stride(0), shift.stride(0), scale.stride(0),
        EPS=eps, FP8_MAX=FP8_MAX, MIN_SCALE=MIN_SCALE, ROWS=rows_per_program, HEAD=head, TAIL=tail,
        num_warps=_NORM_WARPS)
    return out, out_scale


def layer_norm_modulate_quantize_rows_down_triton(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                                                  eps: float, down: torch.Tensor, wrap=launch_directly):
    """layer_norm_modulate_quantize_rows_triton's FP8 rows and scales, and a LoRA's down projection of them
    (rows, rank), as low_rank_rows.fp8_rows_down computes it, in the same launch; down (rank, channels) in the
    compute dtype. For few rows: each row's program reads the whole down factor."""
    x, shift, scale, out, out_scale = _norm_operands(x, shift, scale, 0)
    batch, tokens, cols = x.shape
    rank = down.shape[0]
    low = torch.empty((batch * tokens, rank), device=x.device, dtype=down.dtype)
    head, tail = _head_and_tail(cols)
    wrap(_layer_norm_modulate_quantize_rows_down_kernel)[(batch * tokens,)](
        x, shift, scale, out, out_scale, down.contiguous(), low, cols, tokens, rank, x.stride(1), out.stride(0),
        shift.stride(0), scale.stride(0), EPS=eps, FP8_MAX=FP8_MAX, MIN_SCALE=MIN_SCALE, HEAD=head, TAIL=tail,
        RANK_BLOCK=_DOWN_RANK_BLOCK, num_warps=_NORM_DOWN_WARPS)
    return out, out_scale, low


def _norm_operands(x, shift, scale, columns):
    """(x, shift, scale) as the norm kernels read them, and their FP8 rows (room for `columns` more values
    after each) and scales, unwritten."""
    batch, tokens, cols = x.shape
    if x.stride(2) != 1 or x.stride(0) != tokens * x.stride(1):
        x = x.contiguous()
    shift, scale = (t if t.stride(1) == 1 else t.contiguous() for t in (shift, scale))
    out = torch.empty((batch * tokens, cols + columns), device=x.device, dtype=FP8_DTYPE)
    out_scale = torch.empty((batch * tokens, 1), device=x.device, dtype=torch.float32)
    return x, shift, scale, out, out_scale


@triton.jit
def _fp8_rows_down_sums(x_ptr, down_ptr, rows, rows_inside, ranks, ranks_inside, n_cols, x_row_stride,
                        BLOCK_M: tl.constexpr, RANK: tl.constexpr, BLOCK_K: tl.constexpr):
    # (BLOCK_M, RANK) fp32 sums of the FP8 rows (n_cols values each, x_row_stride apart) times the down
    # factor (rank, cols), which stays in L2: the rows are read once. RANK: rank padded to tl.dot's
    # smallest size, the padding loaded as zeros.
    acc = tl.zeros((BLOCK_M, RANK), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        cols_inside = cols < n_cols
        inside = rows_inside[:, None] & cols_inside[None, :]
        x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=inside, other=0.0)
        down = tl.load(down_ptr + ranks[None, :] * n_cols + cols[:, None],
                       mask=cols_inside[:, None] & ranks_inside[None, :], other=0.0)
        # fp8 -> fp16/bf16 is exact, so the products are exact and the sums fp32.
        acc = tl.dot(x.to(tl.float32).to(down.dtype), down, acc)
    return acc


@triton.jit
def _fp8_rows_down_kernel(x_ptr, x_scale_ptr, down_ptr, out_ptr, n_rows, n_cols, rank, RANK: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    # BLOCK_M rows per program against the whole down factor
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_inside = rows < n_rows
    ranks = tl.arange(0, RANK)
    ranks_inside = ranks < rank
    acc = _fp8_rows_down_sums(x_ptr, down_ptr, rows, rows_inside, ranks, ranks_inside, n_cols, n_cols, BLOCK_M,
                              RANK, BLOCK_K)
    row_scale = tl.load(x_scale_ptr + rows, mask=rows_inside, other=0.0)
    tl.store(out_ptr + rows[:, None] * rank + ranks[None, :], (acc * row_scale[:, None]).to(out_ptr.dtype.element_ty),
             mask=rows_inside[:, None] & ranks_inside[None, :])


def fp8_rows_down_triton(x_fp8: torch.Tensor, x_scale: torch.Tensor, down: torch.Tensor, wrap=launch_directly):
    """Same result as low_rank_rows.fp8_rows_down, for CUDA tensors: (x_fp8 * x_scale) @ down.T in down's
    dtype (fp16 or bf16), x_fp8 (rows, cols) and x_scale (rows, 1) contiguous, down (rank, cols). One read
    of the FP8 rows. wrap: the kernel's launcher (torch.library.wrap_triton inside a triton_op)."""
    rows, cols = x_fp8.shape
    rank = down.shape[0]
    down = down.contiguous()
    out = torch.empty((rows, rank), device=x_fp8.device, dtype=down.dtype)
    block_m = 32
    wrap(_fp8_rows_down_kernel)[(triton.cdiv(rows, block_m),)](
        x_fp8, x_scale, down, out, rows, cols, rank, RANK=max(16, _next_power_of_2(rank)), BLOCK_M=block_m,
        BLOCK_K=128, num_warps=4)
    return out


@triton.jit
def _fp8_rows_columns_kernel(rows_ptr, down_ptr, spread_ptr, weight_ptr, up_ptr, joined_ptr, n_rows, n_cols, rank,
                             columns, row_stride, out_features, weight_row_stride, row_programs,
                             FP8_MAX: tl.constexpr, RANK: tl.constexpr, COLUMNS: tl.constexpr,
                             COLUMN_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                             JOIN_ROWS: tl.constexpr, JOIN_BLOCK: tl.constexpr):
    # The first row_programs programs: BLOCK_M rows each, their first n_cols FP8 values read once and projected
    # by the LoRA's down factor (rank, cols), whose sums are a = low / x_scale; then spread over the LoRA's
    # columns, written after those values in the same rows. The others: JOIN_ROWS rows each of the weight
    # joined with the LoRA's up columns, the GEMM's other operand.
    program = tl.program_id(0)
    if program < row_programs:
        rows = program.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        rows_inside = rows < n_rows
        ranks = tl.arange(0, RANK)
        ranks_inside = ranks < rank
        acc = _fp8_rows_down_sums(rows_ptr, down_ptr, rows, rows_inside, ranks, ranks_inside, n_cols, row_stride,
                                  BLOCK_M, RANK, BLOCK_K)
        # Each column is one rank's sum times one factor (spread has one entry per column): TF32's rounding
        # (2^-11) is far below the FP8 rounding that follows. In blocks of columns: the whole (BLOCK_M, COLUMNS)
        # tile of a stacked LoRA's hundreds of columns spilled registers (146 us a call on an H200).
        for start in tl.static_range(0, COLUMNS, COLUMN_BLOCK):
            outs = start + tl.arange(0, COLUMN_BLOCK)
            outs_inside = outs < columns
            spread = tl.load(spread_ptr + ranks[:, None] * columns + outs[None, :],
                             mask=ranks_inside[:, None] & outs_inside[None, :], other=0.0)
            lq = tl.clamp(tl.dot(acc, spread, input_precision="tf32"), -FP8_MAX, FP8_MAX)
            tl.store(rows_ptr + rows[:, None] * row_stride + n_cols + outs[None, :],
                     lq.to(rows_ptr.dtype.element_ty), mask=rows_inside[:, None] & outs_inside[None, :])
    else:
        _join_weight_rows(weight_ptr, up_ptr, joined_ptr, (program - row_programs).to(tl.int64) * JOIN_ROWS,
                          out_features, n_cols, columns, weight_row_stride, JOIN_ROWS, JOIN_BLOCK)


@triton.jit
def _join_weight_rows(weight_ptr, up_ptr, joined_ptr, first_row, out_features, n_cols, columns, weight_row_stride,
                      JOIN_ROWS: tl.constexpr, JOIN_BLOCK: tl.constexpr):
    # JOIN_ROWS rows of the weight (n_cols bytes each) and of the up columns (columns bytes each), written side
    # by side as rows of the joined weight: what torch.cat writes, without an op of its own
    rows = first_row + tl.arange(0, JOIN_ROWS)
    rows_inside = rows < out_features
    width = n_cols + columns
    for start in range(0, width, JOIN_BLOCK):
        cols = start + tl.arange(0, JOIN_BLOCK)
        in_weight = cols < n_cols
        in_up = (cols >= n_cols) & (cols < width)
        weight = tl.load(weight_ptr + rows[:, None] * weight_row_stride + cols[None, :],
                         mask=rows_inside[:, None] & in_weight[None, :], other=0)
        up = tl.load(up_ptr + rows[:, None] * columns + (cols - n_cols)[None, :],
                     mask=rows_inside[:, None] & in_up[None, :], other=0)
        tl.store(joined_ptr + rows[:, None] * width + cols[None, :], tl.where(in_weight[None, :], weight, up),
                 mask=rows_inside[:, None] & (cols < width)[None, :])


def fp8_rows_columns_triton(x_ext: torch.Tensor, cols: int, down: torch.Tensor, spread: torch.Tensor,
                            weight_fp8: torch.Tensor, up_fp8: torch.Tensor, wrap=launch_directly):
    """Writes a LoRA's FP8 columns (low_rank_columns.py) into x_ext (rows, cols + columns), in place, after
    the FP8 rows in its first cols values, as low_rank_rows.fp8_rows_columns computes them; and returns the
    layer's FP8 weight (out, cols) joined with the LoRA's up columns up_fp8 (out, columns), the GEMM's other
    operand (the torch.cat of low_rank_columns.fp8_rows_matmul_rank_columns), in the same launch. CUDA
    tensors, rows of x_ext, weight_fp8 and up_fp8 contiguous; down (rank, cols) in fp16 or bf16, spread
    (rank, columns) fp32. One read of the rows. wrap: the kernel's launcher (torch.library.wrap_triton
    inside a triton_op)."""
    rows = x_ext.shape[0]
    rank, columns = spread.shape
    out_features = weight_fp8.shape[0]
    if weight_fp8.stride(1) != 1:
        weight_fp8 = weight_fp8.contiguous()
    joined = torch.empty((out_features, cols + columns), device=weight_fp8.device, dtype=weight_fp8.dtype)
    block_m, padded_columns = 32, max(16, _next_power_of_2(columns))
    row_programs, join_rows = triton.cdiv(rows, block_m), 8
    # the weight's bytes as bytes: the join copies them and computes nothing
    wrap(_fp8_rows_columns_kernel)[(row_programs + triton.cdiv(out_features, join_rows),)](
        x_ext, down.contiguous(), spread.contiguous(), weight_fp8.view(torch.uint8), up_fp8.view(torch.uint8),
        joined.view(torch.uint8), rows, cols, rank, columns, x_ext.stride(0), out_features, weight_fp8.stride(0),
        row_programs, FP8_MAX=FP8_MAX, RANK=max(16, _next_power_of_2(rank)), COLUMNS=padded_columns,
        COLUMN_BLOCK=min(padded_columns, 64), BLOCK_M=block_m, BLOCK_K=128, JOIN_ROWS=join_rows, JOIN_BLOCK=512,
        num_warps=4)
    return joined
