"""The row-wise FP8 GEMM with a LoRA added in its epilogue, in Triton (quant/kernels/low_rank_gemm.py
says when it runs).

out = (x_fp8 @ w_fp8.T) * x_scale * w_scale + bias + low @ up.T, with low = x @ down.T computed
beforehand (rows x rank). Added inside the GEMM, the LoRA costs a rank-sized dot per output tile;
added after it, it costs one more read and write of the whole output. Two kernels with the same
epilogue: TMA loads and stores (compute capability 9.0 and newer) and plain loads (Ada)."""
import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


@triton.jit
def _tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # Grouped tile order: GROUP_M row blocks share each weight column block while it is in L2.
    pid = tl.program_id(0)
    blocks_m, blocks_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * blocks_n)
    first_m = group * GROUP_M
    group_rows = min(blocks_m - first_m, GROUP_M)
    return first_m + (pid % (GROUP_M * blocks_n)) % group_rows, (pid % (GROUP_M * blocks_n)) // group_rows


@triton.jit
def _scale_add_low_rank(acc, rows, cols, x_scale_ptr, w_scale_ptr, bias_ptr, low_ptr, up_ptr, M, N,
                        HAS_BIAS: tl.constexpr, RANK: tl.constexpr):
    # Rows and columns past the edge read row 0 / column 0 instead of masking; they are not stored.
    safe_rows = tl.where(rows < M, rows, 0).to(tl.int64)
    safe_cols = tl.where(cols < N, cols, 0).to(tl.int64)
    acc *= tl.load(x_scale_ptr + safe_rows)[:, None] * tl.load(w_scale_ptr + safe_cols)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + safe_cols).to(tl.float32)[None, :]
    ranks = tl.arange(0, RANK)
    low = tl.load(low_ptr + safe_rows[:, None] * RANK + ranks[None, :])
    up = tl.load(up_ptr + safe_cols[None, :] * RANK + ranks[:, None])
    return tl.dot(low, up, acc)


def _tile_configs(pre_hook=None):
    # Tiles for Hopper and Ada FP8 tensor cores; the autotuner drops those that do not fit a GPU's
    # shared memory.
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s,
                          pre_hook=pre_hook)
            for bm, bn, bk, w, s in ((128, 256, 128, 8, 3), (256, 128, 128, 8, 3), (128, 128, 128, 8, 4),
                                     (128, 128, 128, 8, 5), (128, 256, 64, 8, 4), (128, 128, 64, 4, 6))]


@triton.autotune(configs=_tile_configs(), key=["M", "N", "K"])
@triton.jit
def _fp8_gemm_low_rank_kernel(x_ptr, w_ptr, out_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, low_ptr, up_ptr,
                              M, N, K, HAS_BIAS: tl.constexpr, RANK: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                              GROUP_M: tl.constexpr):
    pid_m, pid_n = _tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    x_tile = x_ptr + tl.where(rows < M, rows, 0).to(tl.int64)[:, None] * K + ks[None, :]
    w_tile = w_ptr + tl.where(cols < N, cols, 0).to(tl.int64)[None, :] * K + ks[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_in = (k0 + ks) < K
        x = tl.load(x_tile, mask=k_in[None, :], other=0.0)
        w = tl.load(w_tile, mask=k_in[:, None], other=0.0)
        acc = tl.dot(x, w, acc)
        x_tile += BLOCK_K
        w_tile += BLOCK_K
    acc = _scale_add_low_rank(acc, rows, cols, x_scale_ptr, w_scale_ptr, bias_ptr, low_ptr, up_ptr, M, N, HAS_BIAS,
                              RANK)
    tl.store(out_ptr + rows[:, None].to(tl.int64) * N + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(rows[:, None] < M) & (cols[None, :] < N))


def _tma_block_shapes(nargs):
    nargs["x_desc"].block_shape = [nargs["BLOCK_M"], nargs["BLOCK_K"]]
    nargs["w_desc"].block_shape = [nargs["BLOCK_N"], nargs["BLOCK_K"]]
    nargs["out_desc"].block_shape = [nargs["BLOCK_M"], nargs["BLOCK_N"]]


@triton.autotune(configs=_tile_configs(pre_hook=_tma_block_shapes), key=["M", "N", "K"])
@triton.jit
def _fp8_gemm_low_rank_tma_kernel(x_desc, w_desc, out_desc, x_scale_ptr, w_scale_ptr, bias_ptr, low_ptr, up_ptr,
                                  M, N, K, HAS_BIAS: tl.constexpr, RANK: tl.constexpr,
                                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                                  GROUP_M: tl.constexpr):
    pid_m, pid_n = _tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # TMA loads fill what lies past the edges with zeros
    for k0 in range(0, K, BLOCK_K):
        x = x_desc.load([pid_m * BLOCK_M, k0])
        w = w_desc.load([pid_n * BLOCK_N, k0])
        acc = tl.dot(x, w.T, acc)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = _scale_add_low_rank(acc, rows, cols, x_scale_ptr, w_scale_ptr, bias_ptr, low_ptr, up_ptr, M, N, HAS_BIAS,
                              RANK)
    # a TMA store writes the tile from shared memory and leaves out what lies past the edges
    out_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], acc.to(out_desc.dtype))


def _launch(kernel, operands, out, x_scale, weight_scale, bias, low, up, m, n, k):
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    # without a bias, low stands in for its pointer (never read)
    kernel[grid](*operands, x_scale.contiguous(), weight_scale.contiguous(), low if bias is None else bias,
                 low.contiguous(), up.contiguous(), m, n, k, HAS_BIAS=bias is not None, RANK=low.shape[1])
    return out


def fp8_gemm_low_rank_triton(x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up):
    """x_fp8 (M, K), x_scale (M, 1) fp32, weight_fp8 (N, K), weight_scale (N,) fp32, bias (N,) or
    None, low (M, R) and up (N, R) in the output dtype with R a power of two >= 16 (zero-padded
    ranks): returns (M, N) in low's dtype."""
    (m, k), n = x_fp8.shape, weight_fp8.shape[0]
    out = torch.empty((m, n), device=low.device, dtype=low.dtype)
    return _launch(_fp8_gemm_low_rank_kernel, (x_fp8.contiguous(), weight_fp8.contiguous(), out), out, x_scale,
                   weight_scale, bias, low, up, m, n, k)


def fp8_gemm_low_rank_tma_triton(x_fp8, x_scale, weight_fp8, weight_scale, bias, low, up):
    """fp8_gemm_low_rank_triton with TMA loads and stores (compute capability 9.0 and newer; K a
    multiple of 16 and N of 8: rows on 16-byte boundaries)."""
    (m, k), n = x_fp8.shape, weight_fp8.shape[0]
    out = torch.empty((m, n), device=low.device, dtype=low.dtype)
    # block shapes are placeholders until the autotuner's pre-hook sets those of the config it runs
    descriptors = (TensorDescriptor.from_tensor(x_fp8.contiguous(), [16, 16]),
                   TensorDescriptor.from_tensor(weight_fp8.contiguous(), [16, 16]),
                   TensorDescriptor.from_tensor(out, [16, 16]))
    return _launch(_fp8_gemm_low_rank_tma_kernel, descriptors, out, x_scale, weight_scale, bias, low, up, m, n, k)
