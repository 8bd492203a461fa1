"""What a checkpoint holds: which parts (MMDiT, text encoders, VAE), which SD3.5 model, and how
its MMDiT is stored (names: ComfyUI's or diffusers'; precision: see files/formats/stored_layers.py).

Read from key names and shapes (and the few bytes of comfy_quant markers), so no weights are
loaded to decide.
"""
import os
from dataclasses import dataclass

from ..errors import SD35FP8Error
from ..files.formats.comfy_mixed import check_format_version
from ..files.formats.diffusers_sd3 import diffusers_plan, is_diffusers_sd3
from ..files.formats.mmdit_reader import PlanEntry
from ..files.formats.quanto import logical_name
from ..files.formats.stored_layers import logical_tensors
from ..files.safetensors_file import SafetensorsHeader

CHECKPOINT_MMDIT_PREFIX = "model.diffusion_model."
TEXT_ENCODER_PREFIXES = {"clip_l": "text_encoders.clip_l.transformer.",
                         "clip_g": "text_encoders.clip_g.transformer.",
                         "t5xxl": "text_encoders.t5xxl.transformer."}
VAE_PREFIX = "first_stage_model."

# Keys that identify other model families: (family, keys that must all be present, without prefix)
OTHER_FAMILIES = (
    ("Flux", ("double_blocks.0.img_attn.qkv.weight",)),
    ("SDXL", ("input_blocks.0.0.weight", "label_emb.0.0.weight")),
    ("SD 1.x/2.x", ("input_blocks.0.0.weight",)),
    ("a diffusers-format Flux transformer", ("single_transformer_blocks.0.attn.to_q.weight",)),
)


@dataclass(frozen=True)
class MMDiTInfo:
    model_name: str  # "SD3.5 Large", "SD3.5 Medium", ...
    depth: int
    hidden_size: int
    attn2_blocks: int
    qk_norm: bool


@dataclass(frozen=True)
class CheckpointContents:
    mmdit_prefix: str  # "model.diffusion_model." in single files, "" in diffusion-model files
    mmdit_keys: tuple  # full key names in the file
    mmdit: MMDiTInfo
    text_encoders: tuple  # subset of ("clip_l", "clip_g", "t5xxl"), in that order
    text_encoder_keys: dict  # encoder -> full key names
    vae_keys: tuple
    mmdit_plan: tuple = ()  # formats.mmdit_reader.PlanEntry for every MMDiT tensor, in ComfyUI's names
    mmdit_storage: str = ""  # in words: "BF16", "comfy_quant (per-channel scales)", "... , diffusers names"


def _identify_mmdit(shapes, metadata) -> MMDiTInfo:
    depth = shapes["x_embedder.proj.weight"][0] // 64
    qk_norm = "joint_blocks.0.x_block.attn.ln_q.weight" in shapes
    attn2_blocks = sum(1 for k in shapes if k.startswith("joint_blocks.") and k.endswith("x_block.attn2.qkv.weight"))
    title = " ".join(str(metadata.get(k, "")) for k in ("modelspec.title", "modelspec.architecture")).lower()
    if depth == 38 and qk_norm:
        model_name = "SD3.5 Large Turbo" if "turbo" in title else "SD3.5 Large"
    elif depth == 24 and qk_norm and attn2_blocks:
        model_name = "SD3.5 Medium"
    elif depth == 24 and not qk_norm:
        model_name = "SD3 Medium"
    else:
        model_name = f"SD3-family MMDiT (depth {depth}, not an official size)"
    return MMDiTInfo(model_name, depth, 64 * depth, attn2_blocks, qk_norm)


def _required_mmdit_keys(names, depth):
    """Every tensor of ComfyUI's SD3 MMDiT at this depth (joint blocks = width / 64; the last
    context block is pre-only), in ComfyUI's names. qk-norm and each block's attn2 are read from
    `names`, as ComfyUI detects them; all linears have a bias."""
    qk_norm = any(n.endswith((".attn.ln_q.weight", ".attn.ln_k.weight")) for n in names)
    linears = ["x_embedder.proj", "t_embedder.mlp.0", "t_embedder.mlp.2", "y_embedder.mlp.0", "y_embedder.mlp.2",
               "context_embedder", "final_layer.linear", "final_layer.adaLN_modulation.1"]
    others = ["pos_embed"]
    for i in range(depth):
        for stream in ("context_block", "x_block"):
            block = f"joint_blocks.{i}.{stream}."
            pre_only = stream == "context_block" and i == depth - 1
            attentions = ["attn."] + (["attn2."] if any(n.startswith(block + "attn2.") for n in names) else [])
            for attention in attentions:
                linears += [block + attention + "qkv"] + ([] if pre_only else [block + attention + "proj"])
                if qk_norm:
                    others += [block + attention + "ln_q.weight", block + attention + "ln_k.weight"]
            linears += ([] if pre_only else [block + "mlp.fc1", block + "mlp.fc2"]) + [block + "adaLN_modulation.1"]
    return others + [linear + end for linear in linears for end in (".weight", ".bias")]


def _refuse_missing(name, shapes, prefix, diffusers):
    missing = [k for k in _required_mmdit_keys(shapes, shapes["x_embedder.proj.weight"][0] // 64) if k not in shapes]
    if not missing:
        return
    listed = ", ".join(prefix + k for k in missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    raise SD35FP8Error(
        f"{name} lacks {len(missing)} tensor{'s' if len(missing) > 1 else ''} SD3.5's MMDiT needs"
        f"{' (in ComfyUI names)' if diffusers else ''}: {listed}. ComfyUI would sample black or noisy images "
        "without them. The file is damaged or was cut down: download it again.")


def _other_family(keys):
    for prefix in (CHECKPOINT_MMDIT_PREFIX, ""):
        for family, required in OTHER_FAMILIES:
            if all(prefix + k in keys for k in required):
                return family
    return None


def read_contents(header: SafetensorsHeader) -> CheckpointContents:
    tensors = header.tensors
    name = os.path.basename(header.path)
    names = {logical_name(k) for k in tensors}
    prefix = next((p for p in (CHECKPOINT_MMDIT_PREFIX, "") if p + "x_embedder.proj.weight" in names
                   and p + "joint_blocks.0.x_block.attn.qkv.weight" in names), None)
    diffusers = prefix is None and is_diffusers_sd3(names)
    if prefix is None and not diffusers:
        family = _other_family(tensors)
        found = f"it is {family}" if family else "it has no SD3 MMDiT weights (no x_embedder / joint_blocks keys)"
        raise SD35FP8Error(
            f"{name} is not an SD3 / SD3.5 model: {found}. This loader only takes SD3.5 Large, "
            "Large Turbo and Medium; load other models with ComfyUI's own loaders.")
    check_format_version(header)
    mmdit_keys = tuple(k for k in tensors if k.startswith(prefix)) if prefix else tuple(
        k for k in tensors if not k.startswith(("text_encoders.", VAE_PREFIX)))
    logical, stored_as = logical_tensors(header, mmdit_keys)
    if diffusers:
        plan = diffusers_plan(logical)
    else:
        plan = tuple(PlanEntry(k[len(prefix):], s.shape, (s,)) for k, s in logical.items())
    shapes = {entry.name: entry.shape for entry in plan}
    in_channels = shapes["x_embedder.proj.weight"][1]
    if in_channels != 16:
        raise SD35FP8Error(f"{name} is not an SD3 / SD3.5 model: its MMDiT takes {in_channels} latent channels, SD3 takes 16.")
    _refuse_missing(name, shapes, prefix or "", diffusers)
    text_encoder_keys = {te: tuple(k for k in tensors if k.startswith(p)) for te, p in TEXT_ENCODER_PREFIXES.items()}
    text_encoder_keys = {te: keys for te, keys in text_encoder_keys.items() if keys}
    return CheckpointContents(
        mmdit_prefix=prefix or "",
        mmdit_keys=mmdit_keys,
        mmdit=_identify_mmdit(shapes, header.metadata),
        text_encoders=tuple(text_encoder_keys),
        text_encoder_keys=text_encoder_keys,
        vae_keys=tuple(k for k in tensors if k.startswith(VAE_PREFIX)),
        mmdit_plan=plan,
        mmdit_storage=stored_as + (", diffusers names" if diffusers else ""),
    )
