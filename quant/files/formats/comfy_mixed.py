"""The file this pack writes: ComfyUI's mixed-precision layout.

Per FP8 layer: `<layer>.weight` float8_e4m3fn, `<layer>.weight_scale` fp32 (shape () per tensor,
(out, 1) per channel) and `<layer>.comfy_quant`, a uint8 tensor of UTF-8 JSON (what ComfyUI
v0.4+ reads). The same layers are listed in the header's `_quantization_metadata`, which is all
ComfyUI 0.3.7x reads (newer versions turn it into the same comfy_quant entries). Every other
tensor is bf16 without a marker, so ComfyUI loads it in its compute dtype. `sd35_fp8.*` metadata
says how the file was made. Stock ComfyUI expects one scale per tensor: per-channel files are
for this pack only.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass

import torch

from ...errors import SD35FP8Error
from ...policy import QuantPolicy
from ...quantized_weight import QuantizedWeight
from ...reports.report import QuantReport
from ...scales import FP8_DTYPE, PER_CHANNEL, PER_TENSOR, scale_key
from ..safetensors_writer import SafetensorsWriter

FORMAT_VERSION = 1
HIGH_PRECISION_DTYPE = torch.bfloat16
# Without calibrated input scales, newer ComfyUI must not cast activations to fp8 with scale 1.
LAYER_CONFIG = {"format": "float8_e4m3fn", "full_precision_matrix_mult": True}
COMFY_QUANT = json.dumps(LAYER_CONFIG).encode("utf-8")
QUANTIZATION_METADATA = "_quantization_metadata"
GRANULARITY_NOTES = {
    PER_CHANNEL: "one fp32 scale per output channel: only the SD3.5 FP8 pack reads this file",
    PER_TENSOR: "one fp32 scale per tensor, requantized from the per-channel FP8 weights where the model had "
                  "them (rounded twice: about 1.4x the weight error of the per-channel file); stock ComfyUI "
                  "(0.3.75 and newer) loads this file",
}
PYPROJECT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "pyproject.toml")


@dataclass(frozen=True)
class ModelOrigin:
    """What a loaded MODEL was read from and how it was quantized, for the file saved from it."""
    files: tuple  # paths
    model_name: str
    policy: QuantPolicy
    report: QuantReport


def pack_version():
    with open(PYPROJECT, encoding="utf-8") as f:
        return re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.MULTILINE)[1]


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_entries(name, shape, fp8, granularity, prefix=""):
    """{file key: (dtype, shape)} for one MMDiT tensor, `fp8` when it is stored as an FP8 weight;
    prefix: "model.diffusion_model." in a checkpoint."""
    name = prefix + name
    if not fp8:
        return {name: (HIGH_PRECISION_DTYPE, tuple(shape))}
    scale_shape = () if granularity == PER_TENSOR else (shape[0], 1)
    return {name: (FP8_DTYPE, tuple(shape)), scale_key(name): (torch.float32, scale_shape),
            marker_key(name): (torch.uint8, (len(COMFY_QUANT),))}


def file_tensors(name, value, granularity, prefix=""):
    """[(file key, tensor)] for one MMDiT tensor or QuantizedWeight, matching tensor_entries."""
    name = prefix + name
    if not isinstance(value, QuantizedWeight):
        return [(name, value.to(HIGH_PRECISION_DTYPE))]
    return stored_tensors(name, value, granularity)


def stored_tensors(name, value, granularity=None):
    """[(file key, tensor)]: a tensor as it is; a QuantizedWeight (at `granularity` where given) as its fp8
    values, its scale and its comfy_quant marker."""
    if not isinstance(value, QuantizedWeight):
        return [(name, value)]
    if granularity is not None:
        value = value.to_granularity(granularity)
    return [(name, value.weight), (scale_key(name), value.scale),
            (marker_key(name), torch.tensor(list(COMFY_QUANT), dtype=torch.uint8))]


def marker_key(weight_key):
    return weight_key[: -len(".weight")] + ".comfy_quant"


def file_metadata(model_name, policy, granularity, layers, source_files):
    """layers: (name, quantized, reason) per linear; source_files: paths, hashed here."""
    quantized = [name for name, is_fp8, _ in layers if is_fp8]
    return {
        QUANTIZATION_METADATA: json.dumps({"format_version": "1.0", "layers": {n: LAYER_CONFIG for n in quantized}},
                                           sort_keys=True),
        "modelspec.title": model_name,
        "sd35_fp8.format_version": str(FORMAT_VERSION),
        "sd35_fp8.pack_version": pack_version(),
        "sd35_fp8.policy": policy.name,
        "sd35_fp8.policy_description": policy.description,
        "sd35_fp8.granularity": granularity,
        "sd35_fp8.granularity_note": GRANULARITY_NOTES[granularity],
        "sd35_fp8.layers": json.dumps({name: ("fp8: " if is_fp8 else "kept: ") + reason for name, is_fp8, reason in layers},
                                      sort_keys=True),
        "sd35_fp8.source": json.dumps([{"file": os.path.basename(path), "sha256": file_sha256(path)}
                                       for path in source_files]),
    }


def write_fp8_file(path, *, model_name, policy, layers, source_files, granularity, prefix, overwrite,
                   mmdit_plan, mmdit_values, other_entries, other_values):
    """Writes this pack's file (through SafetensorsWriter: complete, or nothing at all), for the save
    node and the converter alike. mmdit_plan: (name, shape, fp8) per MMDiT tensor; mmdit_values:
    (name, tensor or QuantizedWeight), consumed while writing; other_entries {key: (dtype, shape)}
    and other_values (key, tensor): text encoders and VAE, written as they are; prefix:
    "model.diffusion_model." in a checkpoint; layers and source_files: as file_metadata takes them."""
    entries = dict(other_entries)
    for name, shape, fp8 in mmdit_plan:
        entries.update(tensor_entries(name, shape, fp8, granularity, prefix))
    metadata = file_metadata(model_name, policy, granularity, layers, source_files)
    with SafetensorsWriter(path, entries, metadata, overwrite) as writer:
        for name, value in mmdit_values:
            for key, tensor in file_tensors(name, value, granularity, prefix):
                writer.write(key, tensor)
        for key, tensor in other_values:
            writer.write(key, tensor)


def check_format_version(header):
    version = header.metadata.get("sd35_fp8.format_version")
    if version is not None and not (version.isdigit() and int(version) <= FORMAT_VERSION):
        raise SD35FP8Error(f"{os.path.basename(header.path)} was written by a newer SD3.5 FP8 pack (file format "
                           f"{version}, this one reads up to {FORMAT_VERSION}): update the pack.")
