"""How a file keeps its FP8 layers, read from the header (and the few bytes of comfy_quant markers).

Every format comes down to an fp8 weight and, optionally, its scale:

| format | weight | scale | marker |
|---|---|---|---|
| ComfyUI v0.4+ / this pack | `L.weight` | `L.weight_scale` | `L.comfy_quant` (uint8 JSON) |
| ComfyUI 0.3.7x | `L.weight` | `L.weight_scale` | header `_quantization_metadata` |
| ComfyUI legacy scaled fp8 | `L.weight` | `L.scale_weight` | a `scaled_fp8` tensor |
| stock Save Checkpoint of this pack's models, until they wrote markers | `L.weight` | `L.weight_scale` | none |
| optimum-quanto | `L.weight._data` | `L.weight._scale` | quantization map |
| plain fp8 (stock "fp8_e4m3fn" saves) | `L.weight` | none: 1 | fp8 dtype |

Activation scales (`input_scale`, `scale_input`, quanto's `input_scale` / `output_scale`) are
dropped: this pack scales activations per token, at run time.
"""
import json
import os
from collections import Counter
from dataclasses import dataclass

from ...errors import SD35FP8Error
from ...quantized_weight import scale_fits
from ...scales import scale_key
from ..safetensors_file import read_tensors
from .quanto import check_quanto_qtypes, logical_name

SUPPORTED_FORMAT = "float8_e4m3fn"
# What ComfyUI itself writes in comfy_quant, for a clearer message than "unknown".
COMFY_QUANT_FORMATS = ("float8_e4m3fn", "float8_e5m2", "mxfp8", "nvfp4", "int8_tensorwise", "convrot_w4a4")
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
SCALE_DTYPES = ("F32", "BF16", "F16")
HEADER_KEY = "_quantization_metadata"
UNMARKED_STORAGE = "weight_scale without a format marker"


@dataclass(frozen=True)
class Stored:
    """One tensor as the file keeps it: `key` holds the data (the fp8 values of an FP8 weight)."""
    key: str
    shape: tuple
    fp8: bool = False
    scale_key: str = None  # None for an fp8 weight: scale 1


def _format_error(file_name, layer, fmt):
    if fmt in COMFY_QUANT_FORMATS:
        problem = f"is stored as {fmt}, which this pack does not read"
    else:
        problem = f"has an unknown comfy_quant format {fmt!r}"
    return SD35FP8Error(
        f"{file_name}: layer {layer} {problem} (it reads {SUPPORTED_FORMAT} layers). Load this file with "
        "ComfyUI's own Load Diffusion Model node, or convert the original bf16 model with this pack.")


def _comfy_quant_formats(header, keys, file_name):
    """{layer (with the file's key prefix): format} from comfy_quant tensors and the header, and
    the comfy_quant keys."""
    formats = {}
    markers = [k for k in keys if k.endswith(".comfy_quant")]
    for key, tensor in read_tensors(header, markers):
        try:
            formats[key[: -len(".comfy_quant")]] = json.loads(bytes(tensor.tolist()).decode("utf-8"))["format"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise SD35FP8Error(f"{file_name} is corrupt: {key} is not a comfy_quant JSON object with a \"format\". "
                               "Download it again.") from None
    if HEADER_KEY in header.metadata:
        try:
            layers = json.loads(header.metadata[HEADER_KEY])["layers"]
            header_formats = {layer: conf.get("format") for layer, conf in layers.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SD35FP8Error(f"{file_name} is corrupt: its {HEADER_KEY} header is not "
                               "{\"layers\": {name: {\"format\": ...}}}. Download it again.") from None
        for layer, fmt in header_formats.items():
            # 0.3.7x names layers inside the diffusion model; checkpoint files prefix the keys.
            prefixed = next((p + layer for p in ("", "model.diffusion_model.") if p + layer + ".weight" in keys), layer)
            formats.setdefault(prefixed, fmt)
    for layer, fmt in formats.items():
        if fmt != SUPPORTED_FORMAT:
            raise _format_error(file_name, layer, fmt)
    return formats, markers


def _scaled_fp8(header, keys, file_name):
    """(weight key: scale key, keys to drop, name) of the legacy format, or None without a marker."""
    marker = next((k for k in keys if k.rsplit(".", 1)[-1] == "scaled_fp8"), None)
    if marker is None:
        return None
    # ComfyUI 0.3.75 reads an F32 marker as e4m3fn too.
    if header.tensors[marker].dtype not in ("F8_E4M3", "F32"):
        raise SD35FP8Error(f"{file_name} holds scaled fp8 weights of type {header.tensors[marker].dtype}; this pack "
                           f"reads {SUPPORTED_FORMAT} only. Load it with ComfyUI's own Load Diffusion Model node, "
                           "or convert the original bf16 model with this pack.")
    scales = {k[: -len(".scale_weight")] + ".weight": k for k in keys if k.endswith(".scale_weight")}
    return scales, {marker} | {k for k in keys if k.endswith((".scale_weight", ".scale_input"))}, "ComfyUI scaled_fp8"


def _comfy_quant(header, keys, file_name):
    formats, markers = _comfy_quant_formats(header, keys, file_name)
    if not formats:
        return None
    scales = {layer + ".weight": scale_key(layer + ".weight") if scale_key(layer + ".weight") in keys else None
              for layer in formats}
    dropped = set(markers) | {layer + suffix for layer in formats for suffix in (".weight_scale", ".input_scale")}
    return scales, dropped & keys, "comfy_quant" if markers else HEADER_KEY


def _quanto(header, keys, file_name):
    modules = [k[: -len(".weight._data")] for k in keys if k.endswith(".weight._data")]
    if not modules:
        return None
    check_quanto_qtypes(header, modules)
    scales = {m + ".weight._data": m + ".weight._scale" for m in modules}
    dropped = {m + suffix for m in modules for suffix in (".weight._scale", ".input_scale", ".output_scale")}
    return scales, dropped & keys, "optimum-quanto"


def _unmarked_weight_scales(tensors, keys, claimed):
    """{weight key: scale key} of fp8 weights beside a `weight_scale` that no marker names. Stock Save
    Checkpoint wrote this pack's FP8 layers so (nodes/stock_save.py); ComfyUI reads such a weight with
    scale 1, which is the wrong model, so the scale beside it is the only reading that makes sense."""
    return {k: scale_key(k) for k in keys if k.endswith(".weight") and k not in claimed
            and tensors[k].dtype in FP8_DTYPES and scale_key(k) in keys}


def logical_tensors(header, keys):
    """{name as a plain tensor would be named: Stored}, in file order, and the storage in words.

    keys: the file's keys that belong to the diffusion model."""
    file_name = os.path.basename(header.path)
    tensors, key_set = header.tensors, set(keys)
    scales, dropped, storage = {}, set(), []
    for layers in (_scaled_fp8, _comfy_quant, _quanto):
        found = layers(header, key_set, file_name)
        if found is not None:
            scales.update(found[0])
            dropped |= found[1]
            storage.append(found[2])
    unmarked = _unmarked_weight_scales(tensors, key_set, scales)
    if unmarked:
        scales.update(unmarked)
        dropped |= set(unmarked.values())
        storage.append(UNMARKED_STORAGE)

    logical = {}
    for key in keys:
        if key in dropped:
            continue
        info = tensors[key]
        fp8 = key in scales or (info.dtype in FP8_DTYPES and key.endswith(".weight") and len(info.shape) >= 2)
        scale_key = scales.get(key)
        if fp8:
            _check_fp8(file_name, key, info, scale_key and tensors.get(scale_key))
        logical[logical_name(key)] = Stored(key, info.shape, fp8, scale_key)
    fp8 = [s for s in logical.values() if s.fp8]
    if not fp8:
        return logical, Counter(tensors[s.key].dtype for s in logical.values()).most_common(1)[0][0]
    granularities = {"per-channel" if s.scale_key and tensors[s.scale_key].shape[:1] == s.shape[:1] != (1,)
                     else "per-tensor" for s in fp8}
    return logical, f"{' + '.join(storage) or 'fp8 without scales'} ({' and '.join(sorted(granularities))} scales)"


def _check_fp8(file_name, key, info, scale):
    if info.dtype != "F8_E4M3":
        raise SD35FP8Error(f"{file_name}: {key} is stored as {info.dtype}, not float8_e4m3fn, which is the only "
                           "FP8 type this pack reads. Load it with ComfyUI's own loaders, or convert the original "
                           "bf16 model with this pack.")
    if scale is None:
        return
    if scale.dtype not in SCALE_DTYPES or not scale_fits(info.shape, scale.shape):
        raise SD35FP8Error(
            f"{file_name} is corrupt: the scale of {key} is {scale.dtype} {list(scale.shape)}, which fits neither "
            f"one value per tensor nor one per output channel of the weight {list(info.shape)}. Download it again.")
