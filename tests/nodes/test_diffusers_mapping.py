"""quant/files/formats/diffusers_sd3.py is ComfyUI's own diffusers mapping, kept as data: checked here
against the running ComfyUI's mmdit_to_diffusers and convert_diffusers_mmdit."""
import pytest

from devtools import tiny_sd3
from sd35_fp8.quant.files.formats.diffusers_sd3 import _mapping
from tests.fixtures import quantized_files
from tests.fixtures.quantized_files import read_model, same_bits


def comfy_pairs(depth):
    import comfy.utils
    pairs = set()
    for diffusers, target in comfy.utils.mmdit_to_diffusers({"depth": depth, "num_blocks": depth}).items():
        if isinstance(target, str):
            pairs.add((diffusers, target, "copy"))
        elif target[1] is None:
            pairs.add((diffusers, target[0], "swap_halves"))
        else:
            pairs.add((diffusers, target[0], f"concat {target[1][1] // target[1][2]}"))
    return pairs


def our_pairs(depth):
    pairs = set()
    for comfy_name, names, combine in _mapping(depth, depth):
        for i, name in enumerate(names):
            pairs.add((name, comfy_name, f"concat {i}" if combine == "concat" else combine))
    return pairs


@pytest.mark.parametrize("depth", [24, 38])
def test_same_mapping_as_comfyui_at_official_depths(pack, depth):
    assert our_pairs(depth) == comfy_pairs(depth)


def test_same_tensors_as_comfyui_conversion(pack, tmp_path):
    import comfy.model_detection
    source = tiny_sd3.mmdit_state_dict("medium", depth=3, prefix="", attn2_blocks={0, 2})
    path = quantized_files.write_diffusers(tmp_path / "transformer", source)
    converted = comfy.model_detection.convert_diffusers_mmdit(quantized_files.to_diffusers(source), "")
    _, read = read_model(path)
    assert read.keys() == converted.keys()
    assert all(same_bits(read[k], converted[k]) for k in read)
    assert all(same_bits(read[k], source[k]) for k in source)
