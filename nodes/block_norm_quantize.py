"""Each MMDiT block's layer norm, modulation and FP8 quantization of qkv's and fc1's input in one
Triton pass (quant/kernels/norm_quantize.py), and its gated residual adds as one addcmul each, in
eager CUDA on the row-wise FP8 path.

ComfyUI's DismantledBlock (comfy/ldm/modules/diffusionmodules/mmdit.py, the same in 0.3.75 and 0.33)
computes `self.attn.pre_attention(modulate(self.norm1(x), shift, scale))` and
`x + gate.unsqueeze(1) * ...`: in an eager SD3.5 Large step on an H200 the layer norms, modulations
and the quantizations of their results took about 9.8 ms and the gates' multiplies and adds 6.9 ms
(bench/results/speed_ab10_033_large_gaussian.json). This block class computes the same through fewer
passes where a layer can take FP8 rows (nodes/ops.py `FP8Linear.takes_fp8_rows`: many rows, with or
without a LoRA beside its weight); everywhere else, ComfyUI's own methods. Under torch.compile too:
Inductor's own fusion of the norm, modulation and quantization reads each row three times
(quant/kernels/norm_quantize.py). Only the class of each block changes: its parameters, state dict and
LoRA keys stay as they were.
"""
import torch
from comfy.ldm.modules.diffusionmodules.mmdit import DismantledBlock, Mlp, gate_cat, modulate, split_qkv

from .mlp_gelu import mlp_after_fc1
from .ops import FP8Linear


def fused(block, x):
    """Whether block's qkv input can come from the one-pass kernel in this call."""
    norm, qkv = block.norm1, block.attn.qkv
    return (not block.scale_mod_only and (block.pre_only or isinstance(block.mlp, Mlp))
            and isinstance(norm, torch.nn.LayerNorm) and norm.weight is None
            and isinstance(qkv, FP8Linear) and qkv.takes_fp8_rows(x))


def _norm_modulate_linear(norm, linear, x, shift, scale):
    """linear(modulate(norm(x), shift, scale)), in one pass before the matmul where linear takes FP8 rows."""
    if isinstance(linear, FP8Linear) and linear.takes_fp8_rows(x):
        return linear.forward_norm_modulated(x, shift, scale, norm.eps)
    return linear(modulate(norm(x), shift, scale))


def _attention_inputs(attn, qkv):
    """The rest of ComfyUI's SelfAttention.pre_attention after its qkv linear."""
    q, k, v = split_qkv(qkv, attn.head_dim)
    q = attn.ln_q(q).reshape(q.shape[0], q.shape[1], -1)
    k = attn.ln_k(k).reshape(q.shape[0], q.shape[1], -1)
    return q, k, v


def _mlp_residual(block, x, shift_mlp, scale_mlp, gate_mlp):
    """x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp)), ComfyUI's Mlp.forward after fc1."""
    mlp = block.mlp
    hidden = _norm_modulate_linear(block.norm2, mlp.fc1, x, shift_mlp, scale_mlp)
    return torch.addcmul(x, gate_mlp.unsqueeze(1), mlp_after_fc1(mlp, hidden))


class NormQuantizeBlock(DismantledBlock):
    def pre_attention_qkv(self, x, c):
        """pre_attention with the qkv linear's output (batch, tokens, 3 x width) in place of q, k and v; only
        where fused(self, x)."""
        if self.pre_only:
            shift_msa, scale_msa = self.adaLN_modulation(c).chunk(2, dim=1)
            return _norm_modulate_linear(self.norm1, self.attn.qkv, x, shift_msa, scale_msa), None
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        qkv = _norm_modulate_linear(self.norm1, self.attn.qkv, x, shift_msa, scale_msa)
        return qkv, (x, gate_msa, shift_mlp, scale_mlp, gate_mlp)

    def pre_attention(self, x, c):
        if not fused(self, x):
            return super().pre_attention(x, c)
        qkv, intermediates = self.pre_attention_qkv(x, c)
        return _attention_inputs(self.attn, qkv), intermediates

    def post_attention(self, attn, x, gate_msa, shift_mlp, scale_mlp, gate_mlp):
        if not fused(self, x):
            return super().post_attention(attn, x, gate_msa, shift_mlp, scale_mlp, gate_mlp)
        x = torch.addcmul(x, gate_msa.unsqueeze(1), self.attn.post_attention(attn))
        return _mlp_residual(self, x, shift_mlp, scale_mlp, gate_mlp)

    def pre_attention_x_qkv(self, x, c):
        """pre_attention_x with the first attention's qkv output in place of its q, k and v; only where
        fused(self, x)."""
        (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, shift_msa2, scale_msa2,
         gate_msa2) = self.adaLN_modulation(c).chunk(9, dim=1)
        qkv = _norm_modulate_linear(self.norm1, self.attn.qkv, x, shift_msa, scale_msa)
        qkv2 = _norm_modulate_linear(self.norm1, self.attn2.qkv, x, shift_msa2, scale_msa2)
        return qkv, _attention_inputs(self.attn2, qkv2), (x, gate_msa, shift_mlp, scale_mlp, gate_mlp, gate_msa2)

    def pre_attention_x(self, x, c):
        if not fused(self, x):
            return super().pre_attention_x(x, c)
        qkv, attention2_inputs, intermediates = self.pre_attention_x_qkv(x, c)
        return _attention_inputs(self.attn, qkv), attention2_inputs, intermediates

    def post_attention_x(self, attn, attn2, x, gate_msa, shift_mlp, scale_mlp, gate_mlp, gate_msa2):
        if not fused(self, x):
            return super().post_attention_x(attn, attn2, x, gate_msa, shift_mlp, scale_mlp, gate_mlp, gate_msa2)
        x = gate_cat(x, gate_msa, gate_msa2, self.attn.post_attention(attn), self.attn2.post_attention(attn2))
        return _mlp_residual(self, x, shift_mlp, scale_mlp, gate_mlp)


def use_norm_quantize_blocks(diffusion_model: torch.nn.Module):
    for module in diffusion_model.modules():
        if type(module) is DismantledBlock:
            module.__class__ = NormQuantizeBlock
