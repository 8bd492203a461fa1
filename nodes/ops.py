"""The ComfyUI operations class that holds FP8 linears (`model_options["custom_operations"]`).

A quantized Linear stores `weight` in float8_e4m3fn and `weight_scale` in fp32 (per output
channel, shape (out, 1), or per tensor). Layers that arrive without a scale (the final layer,
embedders, everything a policy keeps) behave exactly like ComfyUI's manual_cast Linear.

ModelPatcher (LoRA) works on the stored fp8 values cast to a float dtype: `convert_weight`
turns them into real weights; `set_weight` keeps a LoRA beside the FP8 weight as a low-rank side path
wherever it can be (nodes/comfy_versions.py), and otherwise requantizes the patched weight with a scale
of its own. Either rides on a new weight Parameter, so unpatching, which restores only `weight`,
restores the layer exactly. Patched in place (ComfyUI's conditioning hooks), a weight keeps the scale its
Parameter computes with, since restoring it copies only the weight back; handed back (lazy saving), the layer's.
Functions other than ComfyUI's patches that the weight goes through (LoRA training's adapters) take it
dequantized, in the compute dtype, as ComfyUI hands a float layer's weight to them.
"""
import torch
import comfy.float
import comfy.ops
from comfy.ops import uncast_bias_weight

from ..quant.kernels.compute_path import ComputePath
from ..quant.kernels.fp8_linear import dequantize, weight_only_linear
from ..quant.kernels.gelu_quantize import GELU_TANH, gelu_tanh
from ..quant.kernels.linear_dispatch import linear_for, norm_rows_linear_for
from ..quant.kernels.low_rank import lora_beside
from ..quant.kernels.opaque_op import compiled_code_launches_kernels
from ..quant.kernels.small_m_linear import SMALL_M_MAX_ROWS
from ..quant.kernels.tensor_arena import TensorArena
from ..quant.scales import weight_scale_like
from .comfy_versions import call_patches, cast_stored_weight, keep_stored_dtype, weight_adapters


class FP8Linear(comfy.ops.manual_cast.Linear):
    compute_path: ComputePath  # set per model by make_fp8_ops
    compute_dtype: torch.dtype  # likewise
    lora_columns: bool  # likewise: whether a LoRA beside the weight needs its FP8 columns (fp8_rows_kernels)
    side_path_arena: TensorArena  # likewise: where the LoRA side paths found at call time are kept
    # GELU_TANH on an MLP's fc2 whose GELU the loader moved into it (nodes/mlp_gelu.py): the layer
    # then takes the pre-activation input. Quantized layers only; not part of the state dict.
    input_activation = None
    # per model, on the row-wise FP8 path with Triton: the linear on FP8 rows of modulate(layer_norm(x))
    # made in one pass (quant/kernels/linear_dispatch.py norm_rows_linear_for), resolved outside compiled
    # code, which then calls it; None elsewhere
    norm_rows_linear = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A parameter, not a buffer: ComfyUI's model patchers move parameters (0.33's DynamicVRAM
        # loads none of a module's buffers, which then cross from pageable memory on every call).
        self.register_parameter("weight_scale", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        scale = state_dict.get(prefix + "weight_scale")
        if scale is not None:
            # Take the stored fp8 tensors as they are; the default loader would cast them
            # into the compute-dtype parameters made at construction.
            self.weight = torch.nn.Parameter(state_dict[prefix + "weight"], requires_grad=False)
            self.weight_scale = torch.nn.Parameter(scale, requires_grad=False)
            keep_stored_dtype(self)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward_comfy_cast_weights(self, input):
        if self.weight_scale is None:
            return super().forward_comfy_cast_weights(input)
        if input.dtype != self.compute_dtype and self.compute_path.uses_fp8_matmul:
            # torch's row-wise FP8 matmul writes bf16 only (f8f8bf16_rowwise): a model asked to compute in
            # another dtype (ComfyUI's ModelComputeDtype) runs these layers in bf16
            return self.forward_comfy_cast_weights(input.to(self.compute_dtype)).to(input.dtype)
        weight, bias, offload_stream = cast_stored_weight(self, input)
        low_rank, scale = call_patches(self, weight, input.numel() // input.shape[-1])
        activation = self.input_activation
        if activation is not None and self.forward_replaced():
            activation = None
        adapters = weight_adapters(self)
        linear = _adapted_linear(adapters, activation) if adapters else self.linears[activation]
        out = linear(input, weight, _on_device(scale, input.device), bias, low_rank)
        uncast_bias_weight(self, weight, bias, offload_stream)
        return out

    def forward_replaced(self):
        """Whether something replaced this layer's forward: ComfyUI 0.33's bypass LoRA (Load LoRA (Bypass),
        LoRA training) wraps it to add its LoRA's output, computed from the layer's input. The layer then takes
        its input as ComfyUI's block gives it: no FP8 rows made by the block's norm, no GELU of its own
        (nodes/mlp_gelu.py applies it before the call)."""
        return "forward" in self.__dict__

    def takes_fp8_rows(self, x):
        """Whether this call can take its input normalized and quantized to FP8 rows in one pass
        (forward_norm_modulated): a quantized layer on the row-wise FP8 path on CUDA, eager or compiled
        where compiled code launches our kernels itself, on more rows than the small-row kernel takes, in the
        model's compute dtype. A LoRA beside the weight takes its input from the same FP8 rows."""
        return (self.weight_scale is not None and self.input_activation is None and x.dtype == self.compute_dtype
                and self.norm_rows_linear is not None and not self.forward_replaced() and not weight_adapters(self)
                and x.is_cuda and (not torch.compiler.is_compiling() or compiled_code_launches_kernels())
                and x.numel() > SMALL_M_MAX_ROWS * x.shape[-1])

    def forward_norm_modulated(self, x, shift, scale, eps):
        """This layer on modulate(layer_norm(x), shift, scale), normalized, modulated and quantized to
        FP8 rows in one pass; only where takes_fp8_rows(x). The output has x's dtype and leading shape."""
        weight, bias, offload_stream = cast_stored_weight(self, x)
        low_rank, weight_scale = call_patches(self, weight, x.shape[0] * x.shape[1])
        out = self.norm_rows_linear(x, shift, scale, eps, weight, _on_device(weight_scale, x.device), bias, low_rank)
        uncast_bias_weight(self, weight, bias, offload_stream)
        return out.reshape(*x.shape[:-1], weight.shape[0])

    # ModelPatcher finds these on every Linear; kept layers pass through unchanged. So does a
    # tensor still in the stored fp8 dtype: 0.33's DynamicVRAM force-loads small layers through
    # patch_weight_to_device(force_cast=True), which passes the raw fp8 weight when no LoRA
    # touches it (and fp8 has no mul/div kernels).
    def convert_weight(self, weight, inplace=False, **kwargs):
        if self.weight_scale is None or weight.dtype == self.weight.dtype:
            return weight
        scale = getattr(self.weight, "sd35_weight_scale", self.weight_scale).to(device=weight.device, dtype=weight.dtype)
        return weight.mul_(scale) if inplace else weight * scale

    def set_weight(self, weight, inplace_update=False, seed=None, return_weight=False, **kwargs):
        if self.weight_scale is not None and weight.dtype != self.weight.dtype and not (return_weight or inplace_update):
            lora = lora_beside(self.weight, self.weight_scale, weight, self.compute_dtype, self.lora_columns)
            if lora is not None:
                # The same fp8 values in a new Parameter that carries the LoRA: unpatching puts the
                # old Parameter back, and with it the layer without the LoRA.
                patched = torch.nn.Parameter(self.weight.data.to(weight.device), requires_grad=False)
                patched.sd35_low_rank = lora
                self.weight = patched
                return
            # Merged (a change not of low rank: DoRA, OFT, a LoRA of rank > 64) with a scale of its own, carried
            # by the new Parameter as the side path is: the layer's could clip a channel the change widens.
            scale = weight_scale_like(weight, self.weight_scale)
            patched = torch.nn.Parameter(comfy.float.stochastic_rounding(weight.float() / scale, self.weight.dtype,
                                                                         seed=seed), requires_grad=False)
            patched.sd35_weight_scale = scale
            self.weight = patched
            return
        if weight.dtype == self.weight.dtype:
            stored = weight
        else:
            patched = weight
            if self.weight_scale is not None:
                # in place, the weight computes with the scale its Parameter carries (a merged LoRA's own)
                scale = self.weight_scale if return_weight else getattr(self.weight, "sd35_weight_scale", self.weight_scale)
                weight = weight / scale.to(device=weight.device, dtype=weight.dtype)
            stored = comfy.float.stochastic_rounding(weight, self.weight.dtype, seed=seed)
            if inplace_update and self.weight_scale is not None:
                # ComfyUI's hooks (MaxSpeed, their default) keep the tensor handed here and, when the same
                # hooks come back (the next step of a sampler whose other cond has none), copy it straight
                # into the Parameter: it must then hold the stored values, not the scaled ones.
                patched.copy_(stored)
        if return_weight:
            return stored
        if inplace_update:
            self.weight.data.copy_(stored)
        else:
            self.weight = torch.nn.Parameter(stored, requires_grad=False)


def _adapted_linear(adapters, activation):
    """The weight-only linear with the dequantized weight handed to `adapters` first, as ComfyUI hands them
    a float layer's weight (LoRA training's adapters, which need the gradient through it), on every
    compute path."""
    def dequantize_and_adapt(weight_fp8, weight_scale, dtype):
        weight = dequantize(weight_fp8, weight_scale, dtype)
        for adapter in adapters:
            weight = adapter(weight)
        return weight

    def linear(x, weight_fp8, weight_scale, bias, low_rank=None):
        if activation is not None:
            x = gelu_tanh(x)
        return weight_only_linear(x, weight_fp8, weight_scale, bias, low_rank, dequantize=dequantize_and_adapt)
    return linear


def _on_device(scale, device):
    if scale.device != device:
        # non_blocking: a blocking copy would synchronize the stream for every offloaded layer and
        # stall ComfyUI's weight streaming (low VRAM).
        scale = scale.to(device=device, non_blocking=True)
    return scale


def make_fp8_ops(compute_path: ComputePath, compute_dtype: torch.dtype):
    """An operations class for one model: its Linear knows the model's compute path and dtype."""
    linears = {activation: linear_for(compute_path, activation) for activation in (None, GELU_TANH)}
    takes_rows = compute_path.fp8_rows_kernels
    linear = type("Linear", (FP8Linear,), {
        "compute_path": compute_path, "compute_dtype": compute_dtype, "linears": linears,
        "lora_columns": takes_rows, "side_path_arena": TensorArena(),
        # a plain function as a class attribute would be bound to the layer
        "norm_rows_linear": staticmethod(norm_rows_linear_for(compute_path)) if takes_rows else None})
    return type("FP8Ops", (comfy.ops.manual_cast,), {"Linear": linear})
