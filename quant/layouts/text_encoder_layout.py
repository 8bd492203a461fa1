"""Which text encoder a file holds (CLIP-L, CLIP-G, T5-XXL), read from key names and shapes alone.

SD3.5 conditions on CLIP-L (768 wide, 12 layers) and CLIP-G (1280 wide, 32 layers), and on T5-XXL
(4096 wide, 24 gated blocks) when present; anything else chosen as one of them is refused with
what it really is, before any tensor data is read.
"""
import math
import os
import re
from collections import Counter
from dataclasses import dataclass

from ..errors import SD35FP8Error
from ..files.safetensors_file import SafetensorsHeader
from ..scales import SCALE_SUFFIX

ENCODER_NAMES = {"clip_l": "CLIP-L", "clip_g": "CLIP-G", "t5xxl": "T5-XXL"}
NEEDED_FILES = ("SD3.5 needs clip_l.safetensors (CLIP-L) and clip_g.safetensors (CLIP-G), and takes a T5-XXL "
                "(t5xxl_fp16.safetensors, or t5xxl_fp8_e4m3fn_scaled.safetensors for less memory) if you have "
                "one; they go in models/text_encoders")
STORAGE_NAMES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F8_E4M3": "fp8_e4m3fn", "F8_E5M2": "fp8_e5m2"}

_CLIP_SIZES = {(768, 12): "clip_l", (1280, 32): "clip_g"}  # (width, layers)
_EXPECTED_SHAPES = {"clip_l": "768 wide with 12 layers", "clip_g": "1280 wide with 32 layers",
                    "t5xxl": "4096 wide with 24 blocks"}
_CHECKPOINT_ENCODER = re.compile(r"text_encoders\.(clip_l|clip_g|t5xxl)\.transformer\.")
_MMDIT_STARTS = ("x_embedder.", "joint_blocks.", "model.diffusion_model.")
_CLIP_LAYER = re.compile(r"(?:text_model\.encoder\.layers|transformer\.resblocks)\.(\d+)\.")
_CLIP_NORMS = ("text_model.encoder.layers.0.layer_norm1.weight", "transformer.resblocks.0.ln_1.weight")
_T5_BLOCK = re.compile(r"encoder\.block\.(\d+)\.")
_T5_ATTENTION = "encoder.block.0.layer.0.SelfAttention."
_T5_GATE = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
T5XXL_WIDTH, T5XXL_BLOCKS, T5XXL_VOCAB = 4096, 24, 32128


@dataclass(frozen=True)
class TextEncoderFile:
    encoder: str  # "clip_l", "clip_g" or "t5xxl"
    storage: str  # dtype of most layer weights: "fp16", "bf16", "fp32", "fp8_e4m3fn", ...
    scaled_fp8: bool  # ComfyUI's legacy format: a `scaled_fp8` marker and per-layer `scale_weight`
    # a `weight_scale` beside an fp8 weight, with or without a comfy_quant marker: this pack's FP8 layers (its
    # save node, stock Save Checkpoint of its T5 in FP8), or ComfyUI's comfy_quant
    weight_scales: bool
    t5_config: dict  # T5 only: the widths ComfyUI's T5 class takes (t5_config_xxl.json keys); else {}

    @property
    def fp8(self):
        return self.storage.startswith("fp8")


def read_text_encoder(header: SafetensorsHeader, slot: str, prefix="") -> TextEncoderFile:
    """The encoder stored under `prefix` in the file, checked to be the one `slot` names."""
    name = os.path.basename(header.path)
    tensors = {k[len(prefix):]: v for k, v in header.tensors.items() if k.startswith(prefix)}
    encoder, found, t5_config = _identify(tensors, slot)
    if encoder != slot:
        if encoder:
            raise SD35FP8Error(f"{slot}: {name} is {found}, not a {ENCODER_NAMES[slot]}: pick it in {encoder} instead.")
        raise SD35FP8Error(f"{slot}: {name} is {found}, not a {ENCODER_NAMES[slot]} that SD3.5 can use: {NEEDED_FILES}.")
    # Storage is the layers' dtype: fp8 files may keep the (large) token embeddings in 16 bits.
    layer_parameters = Counter()
    for key, info in tensors.items():
        if _CLIP_LAYER.match(key) or _T5_BLOCK.match(key):
            layer_parameters[info.dtype] += math.prod(info.shape)
    storage = layer_parameters.most_common(1)[0][0]
    return TextEncoderFile(encoder, STORAGE_NAMES.get(storage, storage), "scaled_fp8" in tensors,
                           _has_weight_scales(tensors), t5_config)


def _has_weight_scales(tensors):
    weights = (tensors.get(k[: -len(SCALE_SUFFIX)] + ".weight") for k in tensors if k.endswith(SCALE_SUFFIX))
    return any(weight is not None and weight.dtype == "F8_E4M3" for weight in weights)


def _identify(tensors, slot):
    """(encoder or None, what the file is in words, T5 widths); `slot` is the encoder asked for,
    whose shapes a wrong-sized one is compared with."""
    embedded = {m.group(1) for k in tensors if (m := _CHECKPOINT_ENCODER.match(k))}
    if embedded and not any(k.startswith(_MMDIT_STARTS) for k in tensors):
        return None, _checkpoint_named(tensors, sorted(embedded)), {}
    clip_layers = {int(m.group(1)) for k in tensors if (m := _CLIP_LAYER.match(k))}
    if clip_layers:
        width = next((tensors[k].shape[0] for k in _CLIP_NORMS if k in tensors), None)
        if width is None:
            return None, "an incomplete CLIP text encoder (no layer norm in its first layer)", {}
        encoder = _CLIP_SIZES.get((width, max(clip_layers) + 1))
        if encoder:
            return encoder, f"a {ENCODER_NAMES[encoder]} text encoder", {}
        if width == 1024:
            return None, "a CLIP-H text encoder (SD 2.x)", {}
        expected = f", where SD3.5's {ENCODER_NAMES[slot]} is {_EXPECTED_SHAPES[slot]}" if slot in _CLIP_SIZES.values() else ""
        return None, f"a CLIP text encoder {width} wide with {max(clip_layers) + 1} layers{expected}", {}
    t5_blocks = {int(m.group(1)) for k in tensors if (m := _T5_BLOCK.match(k))}
    if t5_blocks and "shared.weight" in tensors:
        return _identify_t5(tensors, max(t5_blocks) + 1, slot)
    return None, _other_file(tensors), {}


def _checkpoint_named(tensors, encoders):
    """Text encoders under the key names a checkpoint embeds them with, without the checkpoint's MMDiT."""
    names = ", ".join(ENCODER_NAMES[e] for e in encoders)
    if len(encoders) > 1:
        return f"the text encoders of an SD3 checkpoint ({names}) without its MMDiT"
    prefix = f"text_encoders.{encoders[0]}.transformer."
    encoder, found, _ = _identify({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, encoders[0])
    what = f"a {names}" if encoder == encoders[0] else f"a {names} with unexpected shapes ({found})"
    return f"{what}, stored under the key names of an SD3 checkpoint ({prefix}*), which text-encoder loaders do not read"


def _identify_t5(tensors, blocks, slot):
    vocab, width = tensors["shared.weight"].shape
    if vocab != T5XXL_VOCAB or "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in tensors:
        return None, "a UMT5 or mT5 text encoder (as Wan uses), not SD3's T5-XXL", {}
    if width == 2048:
        return None, "a T5-XL text encoder (as AuraFlow uses)", {}
    if width != T5XXL_WIDTH or blocks != T5XXL_BLOCKS:
        expected = f", where SD3.5's T5-XXL is {_EXPECTED_SHAPES['t5xxl']}" if slot == "t5xxl" else ""
        return None, f"a T5 text encoder {width} wide with {blocks} blocks{expected}", {}
    if _T5_GATE not in tensors:
        return None, "a T5-XXL v1.0 text encoder (no gated feed-forward, as Cosmos uses)", {}
    missing = [k for k in (_T5_ATTENTION + "relative_attention_bias.weight", _T5_ATTENTION + "q.weight") if k not in tensors]
    if missing:
        return None, f"an incomplete T5-XXL (no {missing[0]})", {}
    heads = tensors[_T5_ATTENTION + "relative_attention_bias.weight"].shape[1]
    # ComfyUI fixes T5-XXL's inner widths (t5_config_xxl.json); passing the file's own keeps a
    # checked file loadable whatever they are (tests use a narrow T5 with the real layout).
    t5_config = {"d_model": width, "num_layers": blocks, "vocab_size": vocab, "num_heads": heads,
                 "d_kv": tensors[_T5_ATTENTION + "q.weight"].shape[0] // heads,
                 "d_ff": tensors[_T5_GATE].shape[0]}
    return "t5xxl", "a T5-XXL text encoder", t5_config


def _other_file(tensors):
    keys = list(tensors)
    if any(k.startswith(_MMDIT_STARTS) for k in keys):
        return ("an SD3 / SD3.5 checkpoint or diffusion model (load it with Load SD3.5 Checkpoint (FP8); "
                "text encoders it embeds come from that node's CLIP output)")
    if any("lora_" in k or ".lora." in k for k in keys):
        return "a LoRA"
    if any(k.startswith("model.layers.") for k in keys):
        return "a language model (Llama / Qwen / Gemma family)"
    if any(k.startswith(("decoder.conv_in.", "first_stage_model.", "taesd_decoder.")) for k in keys):
        return "a VAE"
    if not keys:
        return "empty (no tensors)"
    return f"not a CLIP or T5 text encoder ({len(keys)} tensors such as {keys[0]!r})"
