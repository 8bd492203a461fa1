"""The internal form of a stored FP8 weight, whatever file format it came from.

`weight` is float8_e4m3fn, `scale` fp32 of shape () (per tensor) or (out, 1, ...) (per output
channel, one trailing 1 per weight dimension after the first); the weight is `weight * scale`.
"""
import math
from dataclasses import dataclass

import torch

from .scales import PER_TENSOR, dequantize_weight, granularity_of, quantize_weight


def scale_fits(weight_shape, scale_shape) -> bool:
    """Whether a stored scale is per tensor (one value) or one per output channel of the weight."""
    numel = math.prod(scale_shape)
    return numel == 1 or (len(weight_shape) > 0 and numel == weight_shape[0] and scale_shape[0] == weight_shape[0])


@dataclass(frozen=True)
class QuantizedWeight:
    weight: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def from_stored(cls, weight, scale):
        """Normalizes a file's scale ((), (1,), (out,), (out, 1) ...) to the internal shapes, exactly."""
        scale = scale.float()
        if scale.numel() == 1:
            return cls(weight, scale.reshape(()))
        return cls(weight, scale.reshape((weight.shape[0],) + (1,) * (weight.ndim - 1)))

    @property
    def granularity(self):
        return granularity_of(self.scale)

    def dequantize(self, dtype):
        return dequantize_weight(self.weight, self.scale, dtype)

    def per_channel(self):
        """A per-tensor scale repeated on every channel: the same weight, bit for bit."""
        if self.scale.ndim:
            return self
        return QuantizedWeight(self.weight, self.scale.expand((self.weight.shape[0],) + (1,) * (self.weight.ndim - 1)).contiguous())

    def per_tensor(self):
        """Per-channel weights requantized to one scale (absmax of the dequantized weight / 448):
        this rounds a second time, which is why per-channel files are the more accurate."""
        if self.scale.ndim == 0:
            return self
        return QuantizedWeight(*quantize_weight(self.dequantize(torch.float32), PER_TENSOR))

    def to_granularity(self, granularity):
        return self.per_tensor() if granularity == PER_TENSOR else self.per_channel()

    def relative_error(self, reference):
        """||dequantized - reference|| / ||reference||, computed where the weight is."""
        reference = reference.to(self.weight.device).float()
        error = (self.dequantize(torch.float32) - reference).norm() / reference.norm().clamp_min(1e-30)
        return float(error)


def concatenate(parts):
    """Stacks weights along the output dimension (diffusers' separate q, k, v into one qkv):
    exact, with one scale per channel whenever the parts' scales differ."""
    if all(p.scale.ndim == 0 for p in parts) and all(torch.equal(p.scale, parts[0].scale) for p in parts):
        return QuantizedWeight(torch.cat([p.weight for p in parts]), parts[0].scale)
    parts = [p.per_channel() for p in parts]
    return QuantizedWeight(torch.cat([p.weight for p in parts]), torch.cat([p.scale for p in parts]))
