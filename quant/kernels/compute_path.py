"""Which matmul the quantized linears run: FP8 tensor cores or weight-only, chosen per model,
with the reason in words for the loader's summary line.

On CUDA GPUs of compute capability 8.0 or newer the Triton kernels also run (single-pass
activation quantization and dequantization, and the few-rows kernel of small_m_linear.py: the
adaLN modulation linears, at most SMALL_M_MAX_ROWS rows, take FP8 weights with unquantized
activations on every path, more accurate there than FP8 x FP8 and no slower; on the row-wise FP8
path, GELU and quantization before each MLP's fc2 in one kernel, gelu_quantize.py). Older GPUs,
CPU and Apple use plain torch ops.
"""
from dataclasses import dataclass

from .small_m_linear import SMALL_M_MAX_ROWS

WEIGHT_ONLY = "weight_only"
FP8_ROWWISE = "fp8_matmul_rowwise"
FP8_TENSORWISE = "fp8_matmul_tensorwise"
_TRITON_SINCE = (8, 0)


@dataclass(frozen=True)
class ComputePath:
    name: str
    reason: str
    triton_kernels: bool = False

    @property
    def uses_fp8_matmul(self):
        return self.name != WEIGHT_ONLY

    @property
    def fp8_rows_kernels(self):
        """Whether the linears take FP8 rows from our one-pass kernels: the GELU and FP8 quantization
        before an MLP's fc2 (gelu_quantize.py), the norms before qkv and fc1 (norm_quantize.py), and a
        LoRA beside an FP8 weight as extra FP8 columns of the GEMM (low_rank_columns.py)."""
        return self.name == FP8_ROWWISE and self.triton_kernels

    @property
    def summary(self):
        small = (f"; linears on <= {SMALL_M_MAX_ROWS} rows (adaLN modulation): FP8-weight kernel, "
                 f"unquantized activations; q and k RMS norms in one pass" if self.triton_kernels else "")
        gelu = "; MLP GELU and fc2's activation quantization in one kernel" if self.fp8_rows_kernels else ""
        return f"{self.name}: {self.reason}{small}{gelu}"


def choose_compute_path(device_type: str, capability, torch_version, force_weight_only=False,
                        triton_available=True) -> ComputePath:
    """capability: (major, minor) of the CUDA device or None; torch_version: (major, minor)."""
    triton_kernels = (device_type == "cuda" and capability is not None and tuple(capability) >= _TRITON_SINCE
                      and triton_available)
    if force_weight_only:
        return ComputePath(WEIGHT_ONLY, "weight-only forced by the loader option", triton_kernels)
    if device_type != "cuda" or capability is None:
        return ComputePath(WEIGHT_ONLY, f"no CUDA GPU ({device_type}): FP8 matmuls need compute capability 8.9 or newer")
    cc = f"{capability[0]}.{capability[1]}"
    if tuple(capability) < (8, 9):
        return ComputePath(WEIGHT_ONLY, f"GPU compute capability {cc} has no FP8 tensor cores (8.9 or newer needed)",
                           triton_kernels)
    torch_text = f"{torch_version[0]}.{torch_version[1]}"
    rowwise_since = (2, 5) if tuple(capability) >= (9, 0) else (2, 7)
    if tuple(torch_version) >= rowwise_since:
        return ComputePath(FP8_ROWWISE, f"compute capability {cc} and torch {torch_text}: FP8 tensor cores, per-token and per-channel scales",
                           triton_kernels)
    return ComputePath(FP8_TENSORWISE, f"compute capability {cc} but torch {torch_text} has no row-wise FP8 matmul: per-tensor activation scales",
                       triton_kernels)


# T5 runs once per prompt, so FP8 matmuls would save nothing; weight-only keeps its activations,
# which have large outliers, out of FP8.
TEXT_ENCODER_COMPUTE = ComputePath(WEIGHT_ONLY, "text encoders run once per prompt: weights dequantized, activations unquantized")
