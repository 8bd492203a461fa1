"""Each MMDiT joint block's q and k norms and the joint attention's concatenation of its two streams in
one Triton pass (quant/kernels/joint_qkv.py), where both streams' blocks take their qkv input as FP8
rows (nodes/block_norm_quantize.py `fused`: eager CUDA, or compiled code that launches our kernels).

ComfyUI's JointBlock (comfy/ldm/modules/diffusionmodules/mmdit.py, the same in 0.3.75 and 0.33) calls
its module function `block_mixing`, which normalizes q and k per stream, concatenates q, k and v of the
context and image tokens, attends, and splits the result. This class computes the same with the first
two steps in one pass; everywhere else (the CPU, the weight-only path, checkpointing, another norm) it
is ComfyUI's JointBlock. Only the class of each joint block changes: its parameters, state dict and
LoRA keys stay as they were.
"""
import torch
from comfy.ldm.modules.diffusionmodules import mmdit
from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock, RMSNorm

from ..quant.kernels.joint_qkv import joint_qkv_op
from .block_norm_quantize import NormQuantizeBlock, fused


def _head_norms(attn):
    """(ln_q, ln_k) of a self-attention whose q and k norms are RMS norms with a weight, else None."""
    norms = (attn.ln_q, attn.ln_k)
    if all(isinstance(norm, RMSNorm) and norm.weight is not None for norm in norms):
        return norms
    return None


def _takes_joint_qkv(block, context, x, use_checkpoint):
    context_block, x_block = block.context_block, block.x_block
    if (use_checkpoint or block.joint_qkv is None
            or not (isinstance(context_block, NormQuantizeBlock) and isinstance(x_block, NormQuantizeBlock))):
        return False
    context_norms, x_norms = _head_norms(context_block.attn), _head_norms(x_block.attn)
    if context_norms is None or x_norms is None:
        return False
    head_dim, eps = x_block.attn.head_dim, x_norms[0].eps
    return (context_block.attn.head_dim == head_dim and head_dim & (head_dim - 1) == 0
            and all(norm.eps == eps for norm in (*context_norms, x_norms[1])) and context.dtype == x.dtype
            and fused(context_block, context) and fused(x_block, x))


def _weight(norm, like):
    # as ComfyUI's rms_norm does: the weight in the input's dtype, on its device
    weight = norm.weight
    if weight.dtype != like.dtype or weight.device != like.device:
        weight = weight.to(device=like.device, dtype=like.dtype)
    return weight


class JointQkvBlock(JointBlock):
    # the op (quant/kernels/joint_qkv.py), resolved outside compiled code (use_joint_qkv_blocks), which
    # then calls it
    joint_qkv = None

    def forward(self, context, x, c, use_checkpoint=True, transformer_options=None):
        # use_checkpoint's default is block_mixing's, which the JointBlock of a "double_block" patch takes
        transformer_options = {} if transformer_options is None else transformer_options
        if not _takes_joint_qkv(self, context, x, use_checkpoint):
            return super().forward(context, x, c=c, use_checkpoint=use_checkpoint,
                                   transformer_options=transformer_options)
        context_block, x_block = self.context_block, self.x_block
        context_qkv, context_intermediates = context_block.pre_attention_qkv(context, c)
        if x_block.x_block_self_attn:
            x_qkv, x_attention2_inputs, x_intermediates = x_block.pre_attention_x_qkv(x, c)
        else:
            x_qkv, x_intermediates = x_block.pre_attention_qkv(x, c)
        ln_q, ln_k = context_block.attn.ln_q, context_block.attn.ln_k
        q, k, v = self.joint_qkv(context_qkv, x_qkv, _weight(ln_q, x_qkv), _weight(ln_k, x_qkv),
                                 _weight(x_block.attn.ln_q, x_qkv), _weight(x_block.attn.ln_k, x_qkv),
                                 x_block.attn.head_dim, ln_q.eps)
        attn = mmdit.optimized_attention(q, k, v, heads=x_block.attn.num_heads,
                                         transformer_options=transformer_options)
        context_tokens = context_qkv.shape[1]
        context_attn, x_attn = attn[:, :context_tokens], attn[:, context_tokens:]
        context = None if context_block.pre_only else context_block.post_attention(context_attn,
                                                                                   *context_intermediates)
        if x_block.x_block_self_attn:
            attn2 = mmdit.optimized_attention(*x_attention2_inputs, heads=x_block.attn2.num_heads,
                                              transformer_options=transformer_options)
            return context, x_block.post_attention_x(x_attn, attn2, *x_intermediates)
        return context, x_block.post_attention(x_attn, *x_intermediates)


def use_joint_qkv_blocks(diffusion_model: torch.nn.Module):
    op = joint_qkv_op()
    for module in diffusion_model.modules():
        if type(module) is JointBlock:
            module.__class__ = JointQkvBlock
            module.joint_qkv = op
