"""A LoRA beside an FP8 weight as extra columns of K in cuBLAS's FP8 GEMM (torch._scaled_mm), instead of
in the epilogue of a Triton GEMM (low_rank_gemm.py).

The Triton GEMM is slower than cuBLAS's with fast accumulation: on an H200 a LoRA on every qkv and fc1
of SD3.5 Large cost +9.9% of an eager step's GPU time that way, about 7 ms of it the Triton GEMM's gap
(bench/analysis_lora.md, nineteenth session). Here the LoRA rides in the same cuBLAS GEMM:

    out = x_scale * w_scale * (x_fp8 @ w_fp8.T + lq @ uq.T) + bias

where the LoRA's term low @ up.T (low = x @ down.T) equals x_scale * w_scale * (a @ b.T) with
a = low / x_scale and b = up / w_scale, carried in FP8 as lq = a / c and uq = b * c for one c per rank.
Each FP8 factor must stay within +-448, so a rank whose largest a times largest b exceeds 448^2 is
split over J columns, each carrying a / (c sqrt(J)) and b c / sqrt(J); each rank takes the J its own
range needs. The largest b is known from the weight; the largest a is not, before the call:
|x / x_scale| <= 448 per element, so a_r = (x / x_scale) @ down_r has a standard deviation of at most
448 ||down_r|| (a row at the FP8 maximum everywhere), and the columns take ACTIVATION_SIGMAS of that.
Rows of SD3.5's activations spread about a quarter as wide (their largest value about four times their
rms), so that is about 12 of their standard deviations; what lies beyond clamps.
The LoRA's term is then rounded to FP8 once more than the epilogue's (about 2-3% of that term).
Splitting a rank does not make that rounding smaller: its J columns hold the same two values each, whose
roundings add up rather than average out. Columns beyond those the ranges need are zero, padding K for cuBLAS.
"""
from typing import NamedTuple

import torch

from ..scales import FP8_DTYPE, FP8_MAX
from .fp8_linear import FAST_ACCUMULATION, scale_per_output
from .tensor_arena import TensorArena

# How far a rank's activation column may reach, in standard deviations of a row whose every value sits
# at the FP8 maximum (the widest spread an FP8 row can have); beyond it the column clamps.
ACTIVATION_SIGMAS = 3.0
# torch._scaled_mm takes K in multiples of 16
_COLUMN_MULTIPLE = 16
# cuBLAS's FP8 GEMM runs a K of 16 mod 32 about a fifth slower than the next multiple of 32, and multiples
# of 128 the fastest: on an H200, Large's x qkv (8192 rows x K -> 7296) took 0.229 ms at K = 2432 (19 x 128),
# 0.280 at 2432 + 80 columns, 0.243 at + 64, 0.242 at + 128 and 0.255 at + 192; its fc1 0.306, 0.373, 0.326,
# 0.321 and 0.342; Medium's (K = 1536) likewise (bench/results/kernels_lora_columns_width.json). So the
# columns fill K up to the first of these multiples that fits.
_K_MULTIPLES = (128, 64)
# The columns widen the GEMM's K; beyond a quarter of it the Triton GEMM with the LoRA in its epilogue
# is the cheaper (on an H200 it took 0.297 ms for SD3.5 Large's x qkv and 0.404 for fc1 where cuBLAS took
# 0.231 and 0.309, about 30% more: bench/results/kernels_lora.json). A random rank-16 LoRA that changes
# Large's qkv weights by 8% needs 62 columns (3% of K = 2432; 128 with K's padding), one changing them by 50% 344.
MAX_COLUMNS_PER_INPUT = 0.25


class RankColumns(NamedTuple):
    up_fp8: torch.Tensor  # (out, columns) FP8: b * c / sqrt(J) per column of its rank, zero-padded
    spread: torch.Tensor  # (rank, columns) fp32: a @ spread is the activations' columns before rounding

    def placed(self, arena: TensorArena) -> "RankColumns":
        """The same columns copied into arena (tensor_arena.py)."""
        return RankColumns(*(arena.place(t) for t in self))


def rank_columns(up: torch.Tensor, down: torch.Tensor, weight_scale: torch.Tensor) -> RankColumns:
    """The weight's side of a LoRA (up (out, rank), down (rank, in)) as FP8 columns for a layer whose weight
    has weight_scale ((out, 1) per channel or () per tensor)."""
    up, down = up.float(), down.float()
    out_features, rank = up.shape
    b = up / scale_per_output(weight_scale, out_features).reshape(-1, 1)
    tiny = torch.finfo(torch.float32).tiny
    b_max = b.abs().amax(dim=0).clamp_min(tiny)
    a_max = (FP8_MAX * ACTIVATION_SIGMAS * torch.linalg.vector_norm(down, dim=1)).clamp_min(tiny)
    split = (a_max * b_max / FP8_MAX ** 2).ceil().clamp_min(1).long()
    needed = int(split.sum())
    columns = _width(down.shape[1], needed)
    balance = (a_max / b_max).sqrt() * split.sqrt()
    up_columns = (b * (balance / split)).repeat_interleave(split, dim=1)
    up_fp8 = torch.nn.functional.pad(up_columns, (0, columns - needed)).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    # rank r's J_r columns each take a_r / (c_r sqrt(J_r))
    spread = torch.zeros(rank, columns, device=up.device)
    spread[torch.arange(rank, device=up.device).repeat_interleave(split), torch.arange(needed, device=up.device)] = (
        1 / balance).repeat_interleave(split)
    return RankColumns(up_fp8.contiguous(), spread)


def _width(in_features: int, needed: int) -> int:
    """The columns for a layer with in_features inputs whose LoRA needs `needed` of them: up to the next
    multiple of the first of _K_MULTIPLES of the GEMM's K that fits in the layer's limit, else the next
    multiple of 16."""
    for multiple in _K_MULTIPLES:
        aligned = -(-(in_features + needed) // multiple) * multiple - in_features
        if aligned <= MAX_COLUMNS_PER_INPUT * in_features:
            return aligned
    return -(-needed // _COLUMN_MULTIPLE) * _COLUMN_MULTIPLE


def fits_in_columns(columns: RankColumns, in_features: int) -> bool:
    """Whether a layer with in_features inputs takes its LoRA as these columns (else in the epilogue)."""
    return columns.up_fp8.shape[1] <= MAX_COLUMNS_PER_INPUT * in_features


def adds_after_gemm(rows: int, in_features: int) -> bool:
    """Whether a call on `rows` rows adds its LoRA after the GEMM (an addmm_ over the output) rather than
    joining the weight with the LoRA's columns: the join reads and writes the whole FP8 weight (2 bytes an
    element of it), the addmm_ the output in 16 bits (4 bytes an element), so it pays below in_features / 2
    rows. On an H200 the context stream of SD3.5 Large (308 rows) paid 23-25 us a layer in columns, join and
    column kernel, against 10-11 us added after; the image stream's 8192 rows 41 against 111
    (bench/results/kernels_lora_columns_width.json, kernels_lora.json)."""
    return 2 * rows <= in_features


def low_columns(low: torch.Tensor, x_scale: torch.Tensor, columns: RankColumns) -> torch.Tensor:
    """The activations' side: low (rows, rank), the LoRA's down projection of the rows that x_scale
    (rows, 1) quantized, as FP8 columns (rows, columns)."""
    return ((low.float() / x_scale) @ columns.spread).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def fp8_rows_matmul_rank_columns(x_ext, x_scale, weight_fp8, weight_scale, bias, out_dtype, columns):
    """fp8_linear.fp8_rows_matmul over rows already extended by the LoRA's columns (x_ext: (rows, in +
    columns)), the weight extended by `columns` (rank_columns), in one torch._scaled_mm."""
    out_features = weight_fp8.shape[0]
    w_ext = torch.cat([weight_fp8, columns.up_fp8], dim=1)
    w_scale = scale_per_output(weight_scale, out_features).view(1, out_features)
    return torch._scaled_mm(x_ext, w_ext.t(), scale_a=x_scale, scale_b=w_scale, bias=bias, out_dtype=out_dtype,
                            use_fast_accum=FAST_ACCUMULATION)


def extended_rows(x_fp8, x_scale, low, columns):
    """x_fp8 (rows, in) extended by the LoRA's columns, from its down projection low (rows, rank) of those
    rows: the plain-torch way (rows the one-pass norm quantized get their columns from
    norm_quantize.layer_norm_modulate_quantize_rows_columns_op)."""
    return torch.cat([x_fp8, low_columns(low, x_scale, columns)], dim=1)
