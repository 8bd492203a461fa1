"""The ComfyUI operations class that holds FP8 linears (`model_options["custom_operations"]`).

A quantized Linear stores `weight` in float8_e4m3fn and `weight_scale` in fp32 (per output
channel, shape (out, 1), or per tensor). Layers that arrive without a scale (the final layer,
embedders, everything a policy keeps) behave exactly like ComfyUI's manual_cast Linear.

ModelPatcher (LoRA) works on the stored fp8 values cast to a float dtype: `convert_weight`
turns them into real weights, `set_weight` requantizes a patched weight with the same scale, so
unpatching, which restores only `weight`, restores the layer exactly.
"""
import inspect
from functools import partial

import torch
import comfy.float
import comfy.lora
import comfy.model_patcher
import comfy.ops
import comfy.utils
from comfy.ops import cast_bias_weight, uncast_bias_weight

from ..quant.compute_path import FP8_ROWWISE, FP8_TENSORWISE, ComputePath
from ..quant.fp8_linear import (dequantize, fp8_linear_rowwise, fp8_linear_tensorwise, quantize_rows,
                                weight_only_linear)
from ..quant.small_m_linear import small_m_linear, use_small_m_kernel


def _eager_cuda_or(triton_fn, torch_fn):
    """triton_fn on eager CUDA tensors; torch_fn elsewhere and under torch.compile, where Inductor
    fuses the plain-torch math into neighbouring kernels."""
    def dispatch(tensor, *args):
        if tensor.is_cuda and not torch.compiler.is_compiling():
            return triton_fn(tensor, *args)
        return torch_fn(tensor, *args)
    return dispatch


def _linear_for(compute_path: ComputePath):
    """The model's linear: (input, fp8 weight, scale, bias) -> output in the input's dtype."""
    triton_kernels = compute_path.triton_kernels
    quantize_activations, dequantize_weights = quantize_rows, dequantize
    if triton_kernels:
        from ..quant.triton_kernels import dequantize_triton, quantize_rows_triton
        quantize_activations = _eager_cuda_or(quantize_rows_triton, quantize_rows)
        dequantize_weights = _eager_cuda_or(dequantize_triton, dequantize)
    if compute_path.name == FP8_ROWWISE:
        many_rows = partial(fp8_linear_rowwise, quantize=quantize_activations)
    elif compute_path.name == FP8_TENSORWISE:
        many_rows = fp8_linear_tensorwise
    else:
        many_rows = partial(weight_only_linear, dequantize=dequantize_weights)
    if not triton_kernels:
        return many_rows

    def linear(x, weight_fp8, weight_scale, bias):
        x2d = x.reshape(-1, x.shape[-1])
        if use_small_m_kernel(x2d):
            return small_m_linear(x2d, weight_fp8, weight_scale, bias).reshape(*x.shape[:-1], weight_fp8.shape[0])
        return many_rows(x, weight_fp8, weight_scale, bias)
    return linear


# ComfyUI 0.33+ (dynamic VRAM): cast_bias_weight can apply a LoRA in a float dtype and requantize it
# to the stored dtype (compute_dtype, want_requant); 0.3.x has no such arguments.
_CAST_REQUANT_ARGS = "want_requant" in inspect.signature(cast_bias_weight).parameters
_string_to_seed = getattr(comfy.utils, "string_to_seed", None) or comfy.model_patcher.string_to_seed
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class _ScaledLowVramPatch(comfy.model_patcher.LowVramPatch):
    """A LoRA applied at call time (low VRAM, dynamic VRAM) to an FP8Linear: patches the real
    weight (stored values x scale) and returns stored-domain values, as ComfyUI 0.3.x's
    LowVramPatch did through convert_weight/set_weight. ComfyUI 0.33's LowVramPatch no longer
    calls them and would add the LoRA to the unscaled fp8 values. Installed by swapping the class
    of ComfyUI's own patch object, which keeps its identity, prepared patches and pins."""

    def __call__(self, weight):
        layer = self.sd35_fp8_layer
        compute = weight.dtype if weight.dtype in _FLOAT_DTYPES else torch.float32
        patches = getattr(self, "prepared_patches", None)
        if patches is None:
            patches = self.patches[self.key]
        real = layer.convert_weight(weight.to(compute))
        real = comfy.lora.calculate_weight(patches, real, self.key, intermediate_dtype=compute)
        return layer.set_weight(real, seed=_string_to_seed(self.key), return_weight=True).to(compute)


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

    def _own_lowvram_patches(self):
        for patch in (*self.weight_function, getattr(self, "weight_lowvram_function", None)):
            if type(patch) is comfy.model_patcher.LowVramPatch:
                patch.__class__ = _ScaledLowVramPatch
                patch.sd35_fp8_layer = self

    def forward_comfy_cast_weights(self, input):
        if self.weight_scale is None:
            return super().forward_comfy_cast_weights(input)
        self._own_lowvram_patches()
        if self.weight_function or self.bias_function:
            return self._forward_patched_per_call(input)
        # 0.33 dynamic VRAM keeps a LoRA in weight_lowvram_function, not weight_function: let
        # cast_bias_weight apply it in input.dtype and requantize to fp8 (a no-op without a LoRA).
        requant = {"compute_dtype": input.dtype, "want_requant": True} if _CAST_REQUANT_ARGS else {}
        weight, bias, offload_stream = cast_bias_weight(self, input, dtype=self.weight.dtype,
                                                        bias_dtype=input.dtype, offloadable=True,
                                                        **requant)
        # non_blocking: a blocking copy would synchronize the stream for every offloaded layer and
        # stall ComfyUI's weight streaming (low VRAM).
        out = self.linear(input, weight, self.weight_scale.to(device=input.device, non_blocking=True), bias)
        uncast_bias_weight(self, weight, bias, offload_stream)
        return out

    def _forward_patched_per_call(self, input):
        # LoRA in low-VRAM mode (weight_function): ComfyUI casts the stored fp8 values to the
        # compute dtype and runs the patch on them; _ScaledLowVramPatch scales, patches and
        # requantizes, so the result is still in the stored domain and the scale comes last.
        weight, bias, offload_stream = cast_bias_weight(self, input, offloadable=True)
        weight = weight * self.weight_scale.to(device=weight.device, dtype=weight.dtype, non_blocking=True)
        out = torch.nn.functional.linear(input, weight, bias)
        uncast_bias_weight(self, weight, bias, offload_stream)
        return out

    # ModelPatcher finds these on every Linear; kept layers pass through unchanged. So does a
    # tensor still in the stored fp8 dtype: 0.33's dynamic VRAM force-loads small layers through
    # patch_weight_to_device(force_cast=True), which passes the raw fp8 weight when no LoRA
    # touches it (and fp8 has no mul/div kernels).
    def convert_weight(self, weight, inplace=False, **kwargs):
        if self.weight_scale is None or weight.dtype == self.weight.dtype:
            return weight
        scale = self.weight_scale.to(device=weight.device, dtype=weight.dtype)
        return weight.mul_(scale) if inplace else weight * scale

    def set_weight(self, weight, inplace_update=False, seed=None, return_weight=False, **kwargs):
        if weight.dtype == self.weight.dtype:
            stored = weight
        else:
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
