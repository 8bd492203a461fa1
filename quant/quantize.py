"""Quantizes an MMDiT state dict tensor by tensor, as it is read, following a policy."""
import torch

from .policy import QuantPolicy
from .report import LayerReport, QuantReport
from .scales import dequantize_weight, quantize_weight

SCALE_SUFFIX = ".weight_scale"


def quantize_state_dict(named_tensors, policy: QuantPolicy, granularity="per_channel",
                        compute_dtype=torch.bfloat16, device="cpu", on_tensor=None):
    """named_tensors: iterable of (module-relative name, tensor), consumed one at a time.

    Returns (state_dict, QuantReport). Quantized linears appear as `<layer>.weight` in fp8 and
    `<layer>.weight_scale` in fp32; every other floating tensor is cast to `compute_dtype`.
    `on_tensor()` is called after each tensor (progress bars).
    """
    compute_bytes = torch.empty((), dtype=compute_dtype).element_size()
    state_dict, layers, other_bytes = {}, [], 0
    for name, tensor in named_tensors:
        is_linear_weight = name.endswith(".weight") and tensor.ndim == 2
        decision = policy.decide(name[: -len(".weight")]) if is_linear_weight else None
        if decision is not None and decision.quantize:
            source = tensor.to(device)
            weight_fp8, scale = quantize_weight(source, granularity)
            reference = source.float()
            error = (dequantize_weight(weight_fp8, scale) - reference).norm() / reference.norm().clamp_min(1e-30)
            state_dict[name] = weight_fp8.cpu()
            state_dict[decision.name + SCALE_SUFFIX] = scale.cpu()
            layers.append(LayerReport(decision.name, True, decision.reason, tuple(tensor.shape),
                                      tensor.numel() * compute_bytes,
                                      weight_fp8.numel() + scale.numel() * 4, float(error)))
        else:
            kept = tensor.to(compute_dtype) if tensor.is_floating_point() else tensor
            state_dict[name] = kept
            if decision is not None:
                layers.append(LayerReport(decision.name, False, decision.reason, tuple(tensor.shape),
                                          tensor.numel() * compute_bytes, tensor.numel() * compute_bytes, 0.0))
            else:
                other_bytes += kept.numel() * kept.element_size()
        if on_tensor is not None:
            on_tensor()
    return state_dict, QuantReport(policy.name, granularity, tuple(layers), other_bytes)
