"""optimum-quanto's quantization map: which qtype each module's weights were quantized to.

quanto saves it as `quanto_qmap.json` beside the weights (QuantizedDiffusersModel.save_pretrained);
a single file may carry it in its metadata under `quanto_qmap`. The qtype names are resolved by
optimum-quanto itself, so names it adds or renames are read as it reads them.
"""
import json
import os

import torch

from ...errors import SD35FP8Error

QMAP_FILE = "quanto_qmap.json"
QMAP_METADATA_KEY = "quanto_qmap"


def logical_name(key):
    """quanto keeps an fp8 weight as `<layer>.weight._data`: the name a plain file gives it."""
    return key[: -len("._data")] if key.endswith(".weight._data") else key


def read_qmap(header):
    """The quantization map, or None when the file comes without one (the fp8 dtype then says it)."""
    if QMAP_METADATA_KEY in header.metadata:
        text, source = header.metadata[QMAP_METADATA_KEY], f"the {QMAP_METADATA_KEY} metadata of {os.path.basename(header.path)}"
    else:
        path = os.path.join(os.path.dirname(header.files[0]), QMAP_FILE)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            text, source = f.read(), path
    try:
        qmap = json.loads(text)
        return {module: entry["weights"] for module, entry in qmap.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SD35FP8Error(f"{source} is not an optimum-quanto quantization map "
                           "({module: {\"weights\": qtype, ...}}). Download it again.") from None


def check_quanto_qtypes(header, modules):
    """Refuses modules whose weights quanto stored in anything but float8_e4m3fn (int8, int4, e5m2)."""
    qmap = read_qmap(header)
    if qmap is None:
        return
    from optimum.quanto import qtypes

    for module in modules:
        if module not in qmap:
            raise SD35FP8Error(f"{os.path.basename(header.path)} holds quantized weights for {module}, which its "
                               "optimum-quanto quantization map does not list: the map belongs to another model.")
        qtype = qtypes.get(qmap[module])
        if qtype is None or qtype.dtype != torch.float8_e4m3fn:
            raise SD35FP8Error(
                f"{os.path.basename(header.path)}: optimum-quanto stored {module} as {qmap.get(module)!r}; this pack "
                "reads qfloat8 (float8_e4m3fn) weights only. Quantize the model with weights=qfloat8, or convert "
                "the original bf16 model with this pack.")
