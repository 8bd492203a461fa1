"""FP8 e4m3fn weight scales, quantization and dequantization.

A quantized weight is `weight_fp8 * weight_scale`: one fp32 scale per output channel (shape
(out, 1)) or one per tensor (shape ()), each absmax / 448 so the largest value lands on the
largest finite e4m3fn number.
"""
import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max
# An all-zero row would get a zero scale and 0 / 0 = NaN; the smallest normal fp32 keeps it 0.
MIN_SCALE = torch.finfo(torch.float32).tiny

PER_CHANNEL, PER_TENSOR = "per_channel", "per_tensor"
GRANULARITIES = (PER_CHANNEL, PER_TENSOR)
# A quantized layer's scale sits beside its weight: `<layer>.weight` -> `<layer>.weight_scale`.
SCALE_SUFFIX = ".weight_scale"


def scale_key(weight_key: str) -> str:
    return weight_key[: -len(".weight")] + SCALE_SUFFIX


def absmax_scale(absmax: torch.Tensor) -> torch.Tensor:
    """The scale that puts an fp32 absmax on the largest finite e4m3fn number."""
    return (absmax / FP8_MAX).clamp_min(MIN_SCALE)


def weight_scale(weight: torch.Tensor, granularity: str = PER_CHANNEL) -> torch.Tensor:
    absmax = weight.detach().abs().float()
    if granularity == PER_CHANNEL:
        absmax = absmax.amax(dim=tuple(range(1, weight.ndim)), keepdim=True)
    elif granularity == PER_TENSOR:
        absmax = absmax.amax()
    else:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    return absmax_scale(absmax)


def granularity_of(scale: torch.Tensor) -> str:
    """A stored scale's granularity: shape () per tensor, (out, 1, ...) per channel."""
    return PER_TENSOR if scale.ndim == 0 else PER_CHANNEL


def weight_scale_like(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """weight's own scale at the granularity of `scale`, a stored one."""
    return weight_scale(weight, granularity_of(scale))


def quantize_with_scale(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (weight.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def quantize_weight(weight: torch.Tensor, granularity: str = PER_CHANNEL):
    """Returns (weight_fp8, weight_scale)."""
    scale = weight_scale(weight, granularity)
    return quantize_with_scale(weight, scale), scale


def dequantize_weight(weight_fp8: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return (weight_fp8.to(torch.float32) * scale.to(device=weight_fp8.device)).to(dtype)
