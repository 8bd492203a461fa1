"""SD3.5's q and k RMS norms in one Triton pass per call in eager CUDA (quant/kernels/triton_kernels.py
`head_rms_norm_triton`).

ComfyUI's RMSNorm (comfy/ldm/modules/diffusionmodules/mmdit.py, the same in 0.3.75 and 0.33) calls
torch's fused rms_norm on q and k, which arrive as strided views of the qkv output: torch copies each
into a contiguous tensor first, then normalizes rows of 64 values with one GPU block per row. In an
eager SD3.5 Large step on an H100 that was 16.1 ms for the 152 norms, plus their copies
(bench/results/large_gaussian.json), about a tenth of the step. The kernel reads the views in place
and normalizes 64 heads per program. Elsewhere (the CPU, torch.compile, which fuses the norm itself,
other shapes) the layer computes what ComfyUI's does, through ComfyUI's code. Only the class of
each norm module changes: its weight, state dict and LoRA keys stay as they were.
"""
import torch
from comfy.ldm.modules.diffusionmodules.mmdit import RMSNorm

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class OnePassHeadRMSNorm(RMSNorm):
    def forward(self, x):
        if not (x.is_cuda and not torch.compiler.is_compiling() and _kernel_takes(x)):
            return super().forward(x)
        from ..quant.kernels.triton_kernels import head_rms_norm_triton
        weight = self.weight
        if weight is not None and (weight.dtype != x.dtype or weight.device != x.device):
            # as ComfyUI's rms_norm does: the weight in the input's dtype, on its device
            weight = weight.to(device=x.device, dtype=x.dtype)
        return head_rms_norm_triton(x, weight, self.eps)


def _kernel_takes(x):
    head_dim = x.shape[-1] if x.dim() == 4 else 0
    return x.dtype in _FLOAT_DTYPES and x.stride(-1) == 1 and 16 <= head_dim <= 256 and head_dim & (head_dim - 1) == 0


def use_one_pass_qk_norm(diffusion_model: torch.nn.Module):
    for module in diffusion_model.modules():
        if type(module) is RMSNorm:
            module.__class__ = OnePassHeadRMSNorm
