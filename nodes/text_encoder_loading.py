"""Builds ComfyUI's own SD3 CLIP from CLIP-L, CLIP-G and T5-XXL tensors, with T5 cast or quantized
to FP8 tensor by tensor as it is read.

Files already in FP8 (plain, or ComfyUI's legacy `scaled_fp8`) go to ComfyUI as they are, without
our ops class: ComfyUI builds its own fp8 layers for them only when no custom operations are given.
A T5 with this pack's FP8 layers (a `weight_scale` beside each fp8 weight) is built with our ops.
"""
import logging
import os
from collections import Counter
from dataclasses import dataclass

import torch
import comfy.model_management
import comfy.sd
import folder_paths

from ..quant.kernels.compute_path import TEXT_ENCODER_COMPUTE
from ..quant.quantize import quantize_state_dict
from ..quant.reports.report import GIB
from ..quant.files.safetensors_file import SafetensorsHeader, read_header, read_tensors
from ..quant.layouts.sd35_layout import TEXT_ENCODER_PREFIXES
from ..quant.layouts.text_encoder_layout import ENCODER_NAMES, TextEncoderFile, read_text_encoder
from ..quant.text_encoder_policy import T5_FP8
from .comfy_versions import build_text_encoders, register_reload
from .missing_part import MissingPart
from .model_loading import resolve_model_file
from .ops import make_fp8_ops

T5_PRECISIONS = ("as stored", "fp8_e4m3fn", "fp16", "bf16")
CHECKPOINT_TEXT_ENCODER_OPTIONS = {"as stored": "as stored", "drop T5": None, "T5 in FP8": "fp8_e4m3fn"}
_CAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_STORED_DTYPES = {"fp32": torch.float32, **_CAST_DTYPES}
_FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# a layer's format marker and calibrated input scale: our layers take the weight and its scale alone
_LEFT_TO_OUR_LAYERS = (".comfy_quant", ".input_scale")


@dataclass(frozen=True)
class EncoderSource:
    """One encoder's tensors: a whole text-encoder file, or a checkpoint's keys under a prefix."""
    header: SafetensorsHeader
    prefix: str
    file: TextEncoderFile

    @property
    def label(self):
        return f"{ENCODER_NAMES[self.file.encoder]} ({os.path.basename(self.header.path)})"

    def read(self):
        keys = [k for k in self.header.tensors if k.startswith(self.prefix)]
        return ((k[len(self.prefix):], t) for k, t in read_tensors(self.header, keys, keep_open=False))


def file_source(slot, file_name) -> EncoderSource:
    header = read_header(resolve_model_file("text_encoders", file_name))
    return EncoderSource(header, "", read_text_encoder(header, slot))


def load_checkpoint_text_encoders(header, contents, option):
    """The checkpoint's embedded encoders, per the checkpoint loader's text_encoders option; a dropped
    T5's tensors are never read. A MissingPart when that leaves none."""
    t5_precision = CHECKPOINT_TEXT_ENCODER_OPTIONS[option]
    encoders = [te for te in contents.text_encoders if t5_precision is not None or te != "t5xxl"]
    name = os.path.basename(header.path)
    if not contents.text_encoders:
        return MissingPart(
            f"{name} has no text encoders (the official SD3.5 Large file ships without them). Take CLIP from "
            "SD3.5 Text Encoders (FP8) or its Preset node (clip_l.safetensors, clip_g.safetensors and "
            "optionally a T5-XXL in models/text_encoders), or a stock TripleCLIPLoader / DualCLIPLoader "
            "(type sd3), instead of Load SD3.5 Checkpoint (FP8)'s CLIP output; for a LoRA on the model alone, "
            "LoraLoaderModelOnly.")
    if not encoders:
        return MissingPart(
            f"{name} embeds only a T5-XXL, so text_encoders 'drop T5' leaves no text encoder: choose 'as "
            "stored' or 'T5 in FP8', or take CLIP from SD3.5 Text Encoders (FP8) with clip_l and clip_g "
            "files from models/text_encoders.")
    sources = [EncoderSource(header, TEXT_ENCODER_PREFIXES[te], read_text_encoder(header, te, TEXT_ENCODER_PREFIXES[te]))
               for te in encoders]
    return build_sd3_clip(sources, t5_precision)


def build_sd3_clip(sources, t5_precision="as stored", disable_dynamic=False):
    """A stock SD3 CLIP from any subset of the three encoders; logs one summary line. disable_dynamic:
    outside DynamicVRAM (comfy_versions.build_text_encoders)."""
    state_dicts, model_options, t5_report, t5_note = [], {}, None, ""
    for source in sources:
        if source.file.encoder == "t5xxl":
            state_dict, model_options, t5_report, t5_note = _read_t5(source, t5_precision)
        else:
            state_dict = dict(source.read())
        state_dicts.append(state_dict)
    clip = build_text_encoders(state_dicts, model_options, disable_dynamic,
                               embedding_directory=folder_paths.get_folder_paths("embeddings"),
                               clip_type=comfy.sd.CLIPType.SD3)
    if "custom_operations" in model_options:
        # CLIP() sized its ModelPatcher (and on CPU loaded it) before load_sd swapped the
        # placeholder linears for FP8 ones: measure the real storage again.
        clip.patcher.size = comfy.model_management.module_size(clip.cond_stage_model)
    logging.info("[sd35_fp8] %s", _summary(clip, sources, t5_report, t5_note))
    register_reload(clip.patcher, reload_sd3_clip_patcher, (tuple(sources), t5_precision))
    return clip


def reload_sd3_clip_patcher(sources, t5_precision, disable_dynamic=False):
    """The patcher of build_sd3_clip's CLIP built again from the same files (ComfyUI's reload factory)."""
    return build_sd3_clip(sources, t5_precision, disable_dynamic).patcher


def _read_t5(source, t5_precision):
    """(state dict, model_options, QuantReport or None, note for the summary line)."""
    model_options = {"t5xxl_model_config": source.file.t5_config}
    tensors = source.read()
    if source.file.weight_scales:
        return _stored_fp8_layers(tensors, model_options)
    if source.file.fp8:
        note = f" (stored {source.file.storage}{', scaled' if source.file.scaled_fp8 else ''}: loaded as it is)"
        return dict(tensors), model_options, None, note
    if t5_precision in _CAST_DTYPES:
        dtype = _CAST_DTYPES[t5_precision]
        return {k: t.to(dtype) if t.is_floating_point() else t for k, t in tensors}, model_options, None, ""
    if t5_precision != "fp8_e4m3fn":
        return dict(tensors), model_options, None, ""
    load_device = comfy.model_management.text_encoder_device()
    kept_dtype = comfy.model_management.pick_weight_dtype(
        _STORED_DTYPES[source.file.storage], comfy.model_management.text_encoder_dtype(load_device), load_device)
    state_dict, report = quantize_state_dict(tensors, T5_FP8, compute_dtype=kept_dtype, device=load_device)
    _use_fp8_layers(model_options, kept_dtype)
    return state_dict, model_options, report, ""


def _stored_fp8_layers(tensors, model_options):
    """A T5 whose fp8 weights have a `weight_scale` beside them (this pack's save node, stock Save Checkpoint of
    a T5 in FP8, ComfyUI's comfy_quant files): our ops take each with its scale, which ComfyUI leaves out
    where no marker names it (scale 1); the other tensors keep their dtype, as their linears compute in it."""
    state_dict = {k: t for k, t in tensors if not k.endswith(_LEFT_TO_OUR_LAYERS)}
    kept = Counter()
    for tensor in state_dict.values():
        if tensor.is_floating_point() and tensor.dtype not in _FP8_DTYPES:
            kept[tensor.dtype] += tensor.numel()
    _use_fp8_layers(model_options, kept.most_common(1)[0][0])
    return state_dict, model_options, None, " (stored in FP8 with scales: loaded as it is, in this pack's FP8 layers)"


def _use_fp8_layers(model_options, kept_dtype):
    # Built on the offload device: ComfyUI first makes every linear in the kept dtype, and those
    # placeholders must not take VRAM before the FP8 weights replace them.
    model_options.update(custom_operations=make_fp8_ops(TEXT_ENCODER_COMPUTE, kept_dtype),
                         initial_device=comfy.model_management.text_encoder_offload_device())


def _summary(clip, sources, t5_report, t5_note):
    parts = []
    for source in sources:
        part = f"{source.label} {_main_dtypes(getattr(clip.cond_stage_model, source.file.encoder))}"
        if source.file.encoder == "t5xxl":
            part += t5_note + (f"; {t5_report.summary('T5-XXL')}" if t5_report is not None else "")
        parts.append(part)
    return f"SD3.5 text encoders: {', '.join(parts)}; resident {clip.patcher.model_size() / GIB:.2f} GiB"


def _main_dtypes(module):
    """The dtypes holding at least 1% of a module's bytes, largest share first."""
    nbytes = {}
    for tensor in module.state_dict().values():
        nbytes[tensor.dtype] = nbytes.get(tensor.dtype, 0) + tensor.numel() * tensor.element_size()
    total = sum(nbytes.values())
    return " + ".join(str(dtype).replace("torch.", "") for dtype, n in sorted(nbytes.items(), key=lambda kv: -kv[1])
                      if n >= total / 100)
