"""The joint attention's inputs of an MMDiT block from its two streams' qkv outputs: q and k of each
head RMS-normalized (each stream with its own ln_q and ln_k weights), and q, k and v of the context
tokens followed by those of the image tokens, as ComfyUI's block mixing concatenates them
(comfy/ldm/modules/diffusionmodules/mmdit.py `_block_mixing`, the same in 0.3.75 and 0.33).

There each norm writes a new tensor and each of the three concatenations reads and writes q, k and v
once more: in an eager SD3.5 Large step on an H200 the norms took 1.9 ms and the concatenations 6.5
(bench/results/lora_033_DynamicVRAM_profiled20.json, its "none" cell: 38 calls of 4.74 ms reading v
from the strided qkv output, 76 of 1.75 ms), and under torch.compile Inductor reads each stream twice
(about 3.2 ms a compiled step, bench/analysis.md, eighteenth session). The Triton kernel
(triton_kernels.py) reads each token's qkv once and writes its q, k and v once. Registered as the
custom op `sd35_fp8::joint_qkv` when first asked for, opaque to torch.compile, so compiled code
launches the same kernel (opaque_op.py). This module holds the reference it is tested against.
"""
from functools import cache

import torch
import torch.nn.functional as F

from .opaque_op import OpaqueToCompile

_OP_NAME = "sd35_fp8::joint_qkv"


def joint_qkv(context_qkv: torch.Tensor, x_qkv: torch.Tensor, context_q_weight: torch.Tensor,
              context_k_weight: torch.Tensor, x_q_weight: torch.Tensor, x_k_weight: torch.Tensor, head_dim: int,
              eps: float) -> torch.Tensor:
    """(3, batch, context tokens + image tokens, width): q, k and v. context_qkv (batch, context tokens,
    3 x width) and x_qkv (batch, image tokens, 3 x width): the streams' qkv outputs, width = heads x
    head_dim; the weights (head_dim,): each stream's ln_q and ln_k, in the qkv dtype. The norms as
    torch's rms_norm computes them (fp32 inside, one rounding)."""
    def stream(qkv, q_weight, k_weight):
        batch, tokens, _ = qkv.shape
        q, k, v = qkv.reshape(batch, tokens, 3, -1, head_dim).unbind(2)
        q, k = (F.rms_norm(t, (head_dim,), weight=w, eps=eps) for t, w in ((q, q_weight), (k, k_weight)))
        return torch.stack([q, k, v]).flatten(3)
    return torch.cat([stream(context_qkv, context_q_weight, context_k_weight), stream(x_qkv, x_q_weight, x_k_weight)],
                     dim=2)


def _impl(context_qkv: torch.Tensor, x_qkv: torch.Tensor, context_q_weight: torch.Tensor,
          context_k_weight: torch.Tensor, x_q_weight: torch.Tensor, x_k_weight: torch.Tensor, head_dim: int,
          eps: float) -> torch.Tensor:
    from .triton_kernels import joint_qkv_triton
    return joint_qkv_triton(context_qkv, x_qkv, context_q_weight, context_k_weight, x_q_weight, x_k_weight, head_dim,
                            eps)


def _traceable(context_qkv: torch.Tensor, x_qkv: torch.Tensor, context_q_weight: torch.Tensor,
               context_k_weight: torch.Tensor, x_q_weight: torch.Tensor, x_k_weight: torch.Tensor, head_dim: int,
               eps: float) -> torch.Tensor:
    from .triton_kernels import joint_qkv_triton
    return joint_qkv_triton(context_qkv, x_qkv, context_q_weight, context_k_weight, x_q_weight, x_k_weight, head_dim,
                            eps, wrap=torch.library.wrap_triton)


def _shape(context_qkv, x_qkv, context_q_weight, context_k_weight, x_q_weight, x_k_weight, head_dim, eps):
    batch, context_tokens, width3 = context_qkv.shape
    return context_qkv.new_empty((3, batch, context_tokens + x_qkv.shape[1], width3 // 3))


@cache
def joint_qkv_op():
    """The op (context_qkv, x_qkv, context_q_weight, context_k_weight, x_q_weight, x_k_weight, head_dim, eps)
    -> (3, batch, tokens, width) for CUDA tensors, registered on the first call; take it outside compiled
    code, which then calls it."""
    return OpaqueToCompile(_OP_NAME, _impl, _shape, traceable=_traceable)
