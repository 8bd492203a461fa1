"""Moves the GELU of each MMDiT MLP into its FP8 fc2, which then quantizes GELU(input) for its FP8
matmul in one pass (quant/kernels/gelu_quantize.py) instead of reading back what a separate GELU wrote.

ComfyUI's Mlp (comfy/ldm/modules/diffusionmodules/mmdit.py, the same in 0.3.75 and 0.33) runs
fc1 -> act -> drop1 -> norm -> fc2; where act is the tanh GELU, drop1 and norm do nothing and fc2
holds FP8 weights, act becomes an Identity and fc2 applies the GELU itself, except in a call where
something replaced fc2's forward (nodes/ops.py `FP8Linear.forward_replaced`), which must see GELU's
output as in ComfyUI's Mlp. Only modules without parameters change: the state dict (saving, LoRA keys)
stays as it was.
"""
import torch
from comfy.ldm.modules.diffusionmodules.mmdit import Mlp

from ..quant.kernels.gelu_quantize import GELU_TANH, gelu_tanh
from .ops import FP8Linear


def mlp_after_fc1(mlp, hidden):
    """ComfyUI's Mlp.forward from fc1's output on."""
    hidden = mlp.norm(mlp.drop1(mlp.act(hidden)))
    fc2 = mlp.fc2
    if isinstance(fc2, FP8Linear) and fc2.input_activation is not None and fc2.forward_replaced():
        hidden = gelu_tanh(hidden)
    return mlp.drop2(fc2(hidden))


class GeluInFc2Mlp(Mlp):
    def forward(self, x):
        return mlp_after_fc1(self, self.fc1(x))


def _does_nothing(module):
    return isinstance(module, torch.nn.Identity) or (isinstance(module, torch.nn.Dropout) and module.p == 0)


def _gelu_can_move(mlp):
    return (isinstance(mlp.act, torch.nn.GELU) and mlp.act.approximate == "tanh"
            and isinstance(mlp.fc2, FP8Linear) and mlp.fc2.weight_scale is not None
            and _does_nothing(mlp.drop1) and _does_nothing(mlp.norm))


def move_gelu_into_fc2(diffusion_model: torch.nn.Module):
    for mlp in diffusion_model.modules():
        if type(mlp) is Mlp and _gelu_can_move(mlp):
            mlp.__class__ = GeluInFc2Mlp
            mlp.act = torch.nn.Identity()
            mlp.fc2.input_activation = GELU_TANH
