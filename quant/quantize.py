"""Quantizes an MMDiT state dict tensor by tensor, as it is read, following a policy.

A tensor may arrive already in FP8 (a QuantizedWeight read from a pre-quantized file): where the
policy wants FP8 it is taken as stored, bit for bit; where the policy keeps the layer high
precision it is dequantized. The policy decides what is in memory, the file only what is read.
"""
import torch

from .policy import LayerDecision, QuantPolicy
from .quantized_weight import QuantizedWeight
from .reports.report import LayerReport, QuantReport
from .scales import PER_CHANNEL, quantize_weight, scale_key

STORED_REASON = "fp8 as stored in the file"


def decide(name, ndim, policy: QuantPolicy, stored_fp8=False):
    """The decision for one tensor (None for anything but a 2-D `.weight`); the converter plans a
    file with it before reading any data."""
    if not (name.endswith(".weight") and ndim == 2):
        return None
    decision = policy.decide(name[: -len(".weight")])
    if decision.quantize and stored_fp8:
        return LayerDecision(decision.name, True, STORED_REASON)
    if stored_fp8:
        return LayerDecision(decision.name, False, decision.reason + " (dequantized from the file's fp8)")
    return decision


def quantize_tensor(name, tensor, policy: QuantPolicy, granularity=PER_CHANNEL, compute_dtype=torch.bfloat16,
                    device="cpu"):
    """Returns (value, LayerReport or None): value is a QuantizedWeight for the layers the policy
    stores in FP8, otherwise a tensor in `compute_dtype` (non-floating tensors unchanged)."""
    stored_fp8 = isinstance(tensor, QuantizedWeight)
    decision = decide(name, tensor.weight.ndim if stored_fp8 else tensor.ndim, policy, stored_fp8)
    shape = tuple((tensor.weight if stored_fp8 else tensor).shape)
    compute_bytes = torch.empty((), dtype=compute_dtype).element_size()
    if decision is not None and decision.quantize:
        if stored_fp8:
            value, error = tensor, None
        else:
            source = tensor.to(device)
            on_device = QuantizedWeight(*quantize_weight(source, granularity))
            error = on_device.relative_error(source)
            value = QuantizedWeight(on_device.weight.cpu(), on_device.scale.cpu())
        stored_bytes = value.weight.numel() + value.scale.numel() * 4
        return value, LayerReport(decision.name, True, decision.reason, shape, value.weight.numel() * compute_bytes,
                                  stored_bytes, error)
    if stored_fp8:
        value = tensor.dequantize(compute_dtype)
    else:
        value = tensor.to(compute_dtype) if tensor.is_floating_point() else tensor
    if decision is None:
        return value, None
    kept_bytes = value.numel() * compute_bytes
    return value, LayerReport(decision.name, False, decision.reason, shape, kept_bytes, kept_bytes, 0.0)


def quantize_state_dict(named_tensors, policy: QuantPolicy, granularity=PER_CHANNEL,
                        compute_dtype=torch.bfloat16, device="cpu", on_tensor=None):
    """named_tensors: iterable of (module-relative name, tensor or QuantizedWeight), consumed one
    at a time.

    Returns (state_dict, QuantReport). Quantized linears appear as `<layer>.weight` in fp8 and
    `<layer>.weight_scale` in fp32; every other floating tensor is cast to `compute_dtype`.
    `on_tensor()` is called after each tensor (progress bars).
    """
    state_dict, layers, other_bytes, granularities = {}, [], 0, set()
    for name, tensor in named_tensors:
        value, layer = quantize_tensor(name, tensor, policy, granularity, compute_dtype, device)
        if isinstance(value, QuantizedWeight):
            state_dict[name] = value.weight
            state_dict[scale_key(name)] = value.scale
            granularities.add(value.granularity)
        else:
            state_dict[name] = value
        if layer is not None:
            layers.append(layer)
        else:
            other_bytes += value.numel() * value.element_size()
        if on_tensor is not None:
            on_tensor()
    granularity = " and ".join(sorted(granularities)) if granularities else granularity
    return state_dict, QuantReport(policy.name, granularity, tuple(layers), other_bytes)
