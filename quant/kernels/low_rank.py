"""A LoRA on an FP8 layer, kept beside the FP8 weight instead of merged into it.

Merging a LoRA into an FP8 weight rounds twice: the weight was rounded once when quantized, the
patched weight is rounded again. Kept as a low-rank side path at full precision, `x @ down.T @
up.T` next to the untouched FP8 product, the layer computes what the patched bf16 layer computes
up to the original quantization error, and removing the LoRA is exact by construction.

ComfyUI hands a patched layer over as a patched weight (any adapter type, stacked LoRAs,
strengths applied), not as LoRA factors, so the factors are recovered from the difference:
a randomized range finder (Halko, Martinsson, Tropp 2011) with a fixed seed, exact for a
difference of rank <= MAX_RANK. A difference of higher rank (a full-rank diff, LoKr) has no
such factors: the caller then merges and requantizes.
"""
from typing import NamedTuple, Optional

import torch

from ..scales import dequantize_weight
from .low_rank_columns import RankColumns, fits_in_columns, rank_columns
from .tensor_arena import TensorArena

MAX_RANK = 64
# probes beyond the rank sought make the range finder exact to fp32 rounding (Halko et al., sec. 4.2)
_OVERSAMPLING = 8
# the relative accuracy fp32 range finding reaches on a difference smaller than the weight
_FP32_RANGE_FINDING = 2.0 ** -16


class LowRank(NamedTuple):
    up: torch.Tensor    # (out, rank), fp32
    down: torch.Tensor  # (rank, in), fp32
    # the up factor as FP8 columns of the layer's GEMM (low_rank_columns.py); None where not made (another
    # path, or a LoRA too strong for them: the Triton GEMM's epilogue then carries it)
    columns: Optional[RankColumns] = None

    def factors_in(self, dtype: torch.dtype):
        """(up, down) in dtype; the stored tensors themselves when they are in it already, as they are in
        the model's compute dtype: a `.to` that changes nothing still costs microseconds of host time
        on every call of every LoRA'd layer."""
        if self.up.dtype == dtype:
            return self.up, self.down
        return self.up.to(dtype), self.down.to(dtype)

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out += x @ (up @ down).T, in place, the cheap way round: a rank-sized intermediate and one
        GEMM that accumulates into out (the output is read and written once more, not three times)."""
        up, down = self.factors_in(x.dtype)
        out2d = out.view(-1, out.shape[-1])
        out2d.addmm_(x.reshape(-1, x.shape[-1]) @ down.t(), up.t())
        return out

    def with_columns(self, weight_scale: torch.Tensor) -> "LowRank":
        """The same side path with the LoRA also as FP8 columns of the layer's GEMM (low_rank_columns.py), made
        from the factors as stored, for a layer whose weight has weight_scale; as it is where they would not fit
        in the GEMM (a LoRA too strong for them) or at rank 0."""
        if not self.up.shape[1]:
            return self
        columns = rank_columns(self.up, self.down, weight_scale.to(self.up.device))
        return self._replace(columns=columns) if fits_in_columns(columns, self.down.shape[1]) else self

    def placed(self, arena: TensorArena) -> "LowRank":
        """The same side path with its tensors copied into arena (tensor_arena.py)."""
        columns = None if self.columns is None else self.columns.placed(arena)
        return LowRank(arena.place(self.up), arena.place(self.down), columns)

    def merge_into(self, weight: torch.Tensor) -> torch.Tensor:
        """weight += up @ down, in place: for a weight dequantized for this call only, cheaper than
        add_to once the input has more rows than the weight has columns."""
        return weight.addmm_(*self.factors_in(weight.dtype))


def low_rank_factors(difference: torch.Tensor, tolerance: float, max_rank: int = MAX_RANK) -> Optional[LowRank]:
    """The lowest-rank factors with ||up @ down - difference|| <= tolerance (Frobenius), for a 2-D
    weight difference, or None when no factors of rank <= max_rank get that close. The tolerance
    is the caller's: the rounding noise of the dtype the difference was computed in."""
    difference = difference.float()
    rows, cols = difference.shape
    probes = min(max_rank + _OVERSAMPLING, rows, cols)
    generator = torch.Generator(device=difference.device).manual_seed(0)
    sketch = difference @ torch.randn(cols, probes, device=difference.device, generator=generator)
    basis, _ = torch.linalg.qr(sketch)
    u, singular, vh = torch.linalg.svd(basis.t() @ difference, full_matrices=False)
    # drop the directions whose energy together stays within half the tolerance
    tail_energy = singular.square().flip(0).cumsum(0).flip(0)
    rank = int((tail_energy > (tolerance / 2) ** 2).sum())
    if rank > max_rank:
        return None
    up, down = (basis @ u[:, :rank]) * singular[:rank], vh[:rank]
    if torch.linalg.matrix_norm(torch.addmm(difference, up, down, alpha=-1)) > tolerance:
        return None
    return LowRank(up.contiguous(), down.contiguous())


def lora_beside(weight_fp8: torch.Tensor, weight_scale: torch.Tensor, patched: torch.Tensor,
                dtype: torch.dtype = torch.float32, with_columns: bool = False) -> Optional[LowRank]:
    """The side path that turns the layer's FP8 weight into `patched` (the weight with a LoRA merged,
    as ComfyUI computed it, in whatever float dtype it used), or None when the difference is not
    of low rank; factors of rank 0 where patched is the layer's weight up to its dtype's rounding.
    dtype: the model's compute dtype; factors stored in it are used as they are, not converted on
    every call. with_columns: also the LoRA as FP8 columns of the layer's GEMM, for the
    paths that take it so (compute_path.ComputePath.fp8_rows_kernels), where it fits in them."""
    real = dequantize_weight(weight_fp8.to(patched.device), weight_scale.to(patched.device))
    rounding = max(torch.finfo(patched.dtype).eps, _FP32_RANGE_FINDING)
    patched = patched.float()
    factors = low_rank_factors(patched - real, float(rounding * torch.linalg.matrix_norm(patched)))
    if factors is None:
        return None
    low_rank = LowRank(factors.up.to(dtype), factors.down.to(dtype))
    return low_rank.with_columns(weight_scale) if with_columns else low_rank
