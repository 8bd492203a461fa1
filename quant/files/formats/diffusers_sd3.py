"""diffusers' SD3 transformer names mapped onto ComfyUI's MMDiT names.

The same mapping as ComfyUI's model_detection.convert_diffusers_mmdit and utils.mmdit_to_diffusers
(0.3.75 and 0.33 agree), kept here as data so the converter runs without ComfyUI;
tests/nodes/test_diffusers_mapping.py checks it against ComfyUI's own.
"""
from .mmdit_reader import PlanEntry

# ComfyUI name: diffusers name, each with .weight and .bias
LINEARS = {
    "context_embedder": "context_embedder",
    "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
    "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.linear": "proj_out",
}
BLOCK_LINEARS = {
    "context_block.adaLN_modulation.1": "norm1_context.linear",
    "context_block.attn.proj": "attn.to_add_out",
    "context_block.mlp.fc1": "ff_context.net.0.proj",
    "context_block.mlp.fc2": "ff_context.net.2",
    "x_block.adaLN_modulation.1": "norm1.linear",
    "x_block.attn.proj": "attn.to_out.0",
    "x_block.attn2.proj": "attn2.to_out.0",
    "x_block.mlp.fc1": "ff.net.0.proj",
    "x_block.mlp.fc2": "ff.net.2",
}
BLOCK_NORMS = {
    "context_block.attn.ln_q.weight": "attn.norm_added_q.weight",
    "context_block.attn.ln_k.weight": "attn.norm_added_k.weight",
    "x_block.attn.ln_q.weight": "attn.norm_q.weight",
    "x_block.attn.ln_k.weight": "attn.norm_k.weight",
    "x_block.attn2.ln_q.weight": "attn2.norm_q.weight",
    "x_block.attn2.ln_k.weight": "attn2.norm_k.weight",
}
# diffusers keeps q, k and v apart; ComfyUI has one fused qkv linear.
BLOCK_QKV = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
}
# AdaLayerNormContinuous orders its output (scale, shift); ComfyUI's modulation (shift, scale).
SWAPPED = {"final_layer.adaLN_modulation.1": "norm_out.linear"}
DETECT_KEYS = ("transformer_blocks.0.attn.add_q_proj.weight", "pos_embed.proj.weight")


def is_diffusers_sd3(names):
    return all(key in names for key in DETECT_KEYS)


def _mapping(depth, blocks):
    """[(ComfyUI name, (diffusers names...), combine)] for every tensor an SD3 transformer can have."""
    pairs = [("pos_embed", ("pos_embed.pos_embed",), "copy")]
    for end in ("weight", "bias"):
        pairs += [(f"{c}.{end}", (f"{d}.{end}",), "copy") for c, d in LINEARS.items()]
        pairs += [(f"{c}.{end}", (f"{d}.{end}",), "swap_halves") for c, d in SWAPPED.items()]
        for i in range(blocks):
            comfy, diffusers = f"joint_blocks.{i}.", f"transformer_blocks.{i}."
            # The last block's context stream is pre-only: its modulation is AdaLayerNormContinuous.
            for c, d in BLOCK_LINEARS.items():
                combine = "swap_halves" if i == depth - 1 and c.startswith("context_block.adaLN") else "copy"
                pairs.append((f"{comfy}{c}.{end}", (f"{diffusers}{d}.{end}",), combine))
            pairs += [(f"{comfy}{c}.{end}", tuple(f"{diffusers}{p}.{end}" for p in parts), "concat")
                      for c, parts in BLOCK_QKV.items()]
    for i in range(blocks):
        pairs += [(f"joint_blocks.{i}.{c}", (f"transformer_blocks.{i}.{d}",), "copy") for c, d in BLOCK_NORMS.items()]
    return pairs


def diffusers_plan(logical):
    """logical: {diffusers name: Stored}. Returns the PlanEntry tuple in ComfyUI's names; diffusers
    tensors ComfyUI has no place for are left out, as ComfyUI leaves them."""
    depth = logical["pos_embed.proj.weight"].shape[0] // 64
    blocks = 0
    while any(name.startswith(f"transformer_blocks.{blocks}.") for name in logical):
        blocks += 1
    plan = []
    for comfy, names, combine in _mapping(depth, blocks):
        if all(name in logical for name in names):
            sources = tuple(logical[name] for name in names)
            shape = tuple(sources[0].shape)
            if combine == "concat":
                shape = (sum(s.shape[0] for s in sources),) + shape[1:]
            plan.append(PlanEntry(comfy, shape, sources, combine))
    return tuple(plan)
