"""The ComfyUI operations class that holds FP8 linears (`model_options["custom_operations"]`).

A quantized Linear stores `weight` in float8_e4m3fn and `weight_scale` in fp32 (per output
channel, shape (out, 1), or per tensor). Layers that arrive without a scale (the final layer,
embedders, everything a policy keeps) behave exactly like ComfyUI's manual_cast Linear.

ModelPatcher (LoRA) works on the stored fp8 values cast to a float dtype: `convert_weight`
turns them into real weights, `set_weight` requantizes a patched weight with the same scale, so
unpatching, which restores only `weight`, restores the layer exactly.
"""
import torch
import comfy.float
import comfy.ops
from comfy.ops import cast_bias_weight, uncast_bias_weight

from ..quant.compute_path import FP8_ROWWISE, FP8_TENSORWISE, ComputePath
from ..quant.fp8_linear import (dequantize, fp8_linear_rowwise, fp8_linear_tensorwise, quantize_rows,
                                weight_only_linear)


def _eager_cuda(tensor):
    # Under torch.compile the plain-torch math is used: Inductor fuses it into neighbouring kernels.
    return tensor.is_cuda and not torch.compiler.is_compiling()


def _quantize_rows(x2d):
    if _eager_cuda(x2d):
        from ..quant.triton_kernels import quantize_rows_triton
        return quantize_rows_triton(x2d)
    return quantize_rows(x2d)


def _dequantize(weight_fp8, weight_scale, dtype):
    if _eager_cuda(weight_fp8):
        from ..quant.triton_kernels import dequantize_triton
        return dequantize_triton(weight_fp8, weight_scale, dtype)
    return dequantize(weight_fp8, weight_scale, dtype)


def _linear_for(compute_path: ComputePath):
    if compute_path.name == FP8_ROWWISE:
        return lambda x, w, s, b: fp8_linear_rowwise(x, w, s, b, quantize=_quantize_rows)
    if compute_path.name == FP8_TENSORWISE:
        return fp8_linear_tensorwise
    return lambda x, w, s, b: weight_only_linear(x, w, s, b, dequantize=_dequantize)


class FP8Linear(comfy.ops.manual_cast.Linear):
    compute_path: ComputePath  # set per model by make_fp8_ops

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("weight_scale", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        scale = state_dict.get(prefix + "weight_scale")
        if scale is not None:
            # Take the stored fp8 tensors as they are; the default loader would cast them
            # into the compute-dtype parameters made at construction.
            self.weight = torch.nn.Parameter(state_dict[prefix + "weight"], requires_grad=False)
            self.weight_scale = scale
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward_comfy_cast_weights(self, input):
        if self.weight_scale is None:
            return super().forward_comfy_cast_weights(input)
        if self.weight_function or self.bias_function:
            return self._forward_patched_per_call(input)
        weight, bias, offload_stream = cast_bias_weight(self, input, dtype=self.weight.dtype,
                                                        bias_dtype=input.dtype, offloadable=True)
        out = self.linear(input, weight, self.weight_scale.to(device=input.device), bias)
        uncast_bias_weight(self, weight, bias, offload_stream)
        return out

    def _forward_patched_per_call(self, input):
        # LoRA in low-VRAM mode (weight_function): ComfyUI casts the raw fp8 values and patches
        # them in that domain, like its own scaled-fp8 ops; the scale comes last.
        weight, bias, offload_stream = cast_bias_weight(self, input, offloadable=True)
        weight = weight * self.weight_scale.to(device=weight.device, dtype=weight.dtype)
        out = torch.nn.functional.linear(input, weight, bias)
        uncast_bias_weight(self, weight, bias, offload_stream)
        return out

    # ModelPatcher finds these on every Linear; kept layers pass through unchanged.
    def convert_weight(self, weight, inplace=False, **kwargs):
        if self.weight_scale is None:
            return weight
        scale = self.weight_scale.to(device=weight.device, dtype=weight.dtype)
        return weight.mul_(scale) if inplace else weight * scale

    def set_weight(self, weight, inplace_update=False, seed=None, return_weight=False, **kwargs):
        if self.weight_scale is not None:
            weight = weight / self.weight_scale.to(device=weight.device, dtype=weight.dtype)
        stored = comfy.float.stochastic_rounding(weight, self.weight.dtype, seed=seed)
        if return_weight:
            return stored
        if inplace_update:
            self.weight.data.copy_(stored)
        else:
            self.weight = torch.nn.Parameter(stored, requires_grad=False)


def make_fp8_ops(compute_path: ComputePath):
    """An operations class for one model: its Linear knows the model's compute path."""
    linear = type("Linear", (FP8Linear,), {"compute_path": compute_path,
                                           "linear": staticmethod(_linear_for(compute_path))})
    return type("FP8Ops", (comfy.ops.manual_cast,), {"Linear": linear})
