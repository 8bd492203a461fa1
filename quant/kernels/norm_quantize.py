"""The adaLN block's layer norm and modulation, `modulate(norm(x), shift, scale)` in ComfyUI's MMDiT,
and the row-wise FP8 quantization of the result for the FP8 matmul of the linear it feeds (qkv,
fc1), in one pass over the tokens.

Apart, in an eager SD3.5 Large step on an H200 the layer norms took 2.9 ms, the modulations
(addcmul) 5.2 ms and the quantizations of their results about 1.7 ms, each pass reading what the
one before wrote (bench/results/speed_ab10_033_large_gaussian.json). The Triton kernel
(triton_kernels.py) keeps a token's row in registers: one read, one write of FP8 values. This is
the reference it is tested against.
"""
import torch
import torch.nn.functional as F

from .fp8_linear import quantize_rows


def layer_norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """layer_norm(x) * (1 + scale) + shift in fp32; x (batch, tokens, channels), shift and scale
    (batch, channels); the layer norm without weight and bias, as SD3.5's norm1 and norm2."""
    normalized = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    return normalized * (1 + scale.float().unsqueeze(1)) + shift.float().unsqueeze(1)


def layer_norm_modulate_quantize_rows(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float):
    """(fp8 values (batch * tokens, channels), fp32 scales (batch * tokens, 1)) of layer_norm_modulate."""
    return quantize_rows(layer_norm_modulate(x, shift, scale, eps).reshape(-1, x.shape[-1]))
