"""Which matmul the quantized linears run: FP8 tensor cores or weight-only, chosen per model,
with the reason in words for the loader's summary line.

Every quantized layer takes the model's path. Measured on an H100 (bench/RESULTS.md, kernel
table), the FP8 GEMM also wins where it was expected not to pay: the adaLN linears (2 rows)
0.028 ms against 0.039 ms for bf16 and 0.24 ms weight-only, the 308-row context stream
0.029 ms against 0.030 ms bf16 and 0.13 ms weight-only.
"""
from dataclasses import dataclass

WEIGHT_ONLY = "weight_only"
FP8_ROWWISE = "fp8_matmul_rowwise"
FP8_TENSORWISE = "fp8_matmul_tensorwise"


@dataclass(frozen=True)
class ComputePath:
    name: str
    reason: str

    @property
    def uses_fp8_matmul(self):
        return self.name != WEIGHT_ONLY


def choose_compute_path(device_type: str, capability, torch_version, force_weight_only=False) -> ComputePath:
    """capability: (major, minor) of the CUDA device or None; torch_version: (major, minor)."""
    if force_weight_only:
        return ComputePath(WEIGHT_ONLY, "weight-only forced by the loader option")
    if device_type != "cuda" or capability is None:
        return ComputePath(WEIGHT_ONLY, f"no CUDA GPU ({device_type}): FP8 matmuls need compute capability 8.9 or newer")
    cc = f"{capability[0]}.{capability[1]}"
    if tuple(capability) < (8, 9):
        return ComputePath(WEIGHT_ONLY, f"GPU compute capability {cc} has no FP8 tensor cores (8.9 or newer needed)")
    torch_text = f"{torch_version[0]}.{torch_version[1]}"
    rowwise_since = (2, 5) if tuple(capability) >= (9, 0) else (2, 7)
    if tuple(torch_version) >= rowwise_since:
        return ComputePath(FP8_ROWWISE, f"compute capability {cc} and torch {torch_text}: FP8 tensor cores, per-token and per-channel scales")
    return ComputePath(FP8_TENSORWISE, f"compute capability {cc} but torch {torch_text} has no row-wise FP8 matmul: per-tensor activation scales")
