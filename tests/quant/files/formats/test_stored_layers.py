"""ComfyUI's FP8 formats: every FP8 layer read bit for bit, without re-quantization."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from devtools.tiny_sd3 import MMDIT_PREFIX as PREFIX
from sd35_fp8.quant.errors import SD35FP8Error
from sd35_fp8.quant.quantized_weight import QuantizedWeight
from tests.fixtures import quantized_files
from tests.fixtures.quantized_files import read_model, same_bits


def assert_read_as_stored(path, source, scale_suffix=".weight_scale", prefix="", every_linear=False):
    stored = load_file(str(path))
    _, read = read_model(path)
    assert read.keys() == source.keys()
    fp8 = quantized_files.fp8_layers(source, every_linear)
    for name, value in read.items():
        layer = name[: -len(".weight")]
        if layer in fp8:
            assert isinstance(value, QuantizedWeight), name
            assert same_bits(value.weight, stored[prefix + name])
            assert torch.equal(value.scale.flatten(), stored[prefix + layer + scale_suffix].float().flatten())
        else:
            assert same_bits(value, source[name]), name


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("input_scale", [False, True])
def test_comfy_quant(tmp_path, source, granularity, input_scale):
    path = quantized_files.write_comfy_quant(tmp_path / "cq.safetensors", source, granularity, input_scale=input_scale)
    assert_read_as_stored(path, source)
    contents, _ = read_model(path)
    assert contents.mmdit_storage == f"comfy_quant ({granularity.replace('_', '-')} scales)"


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_quantization_metadata_header(tmp_path, source, prefix):
    path = quantized_files.write_quantization_metadata(tmp_path / "qm.safetensors", source, prefix)
    assert_read_as_stored(path, source, prefix=prefix)
    assert read_model(path)[0].mmdit_storage == "_quantization_metadata (per-tensor scales)"


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_legacy_scaled_fp8_every_linear(tmp_path, source, prefix):
    path = quantized_files.write_scaled_fp8(tmp_path / "scaled.safetensors", source, prefix)
    assert_read_as_stored(path, source, ".scale_weight", prefix, every_linear=True)
    _, read = read_model(path)
    assert isinstance(read["final_layer.linear.weight"], QuantizedWeight)


def test_plain_fp8_weights_have_scale_one(tmp_path, source):
    sd = {k: v.to(torch.float8_e4m3fn) if k.endswith(".weight") and v.ndim == 2 else v for k, v in source.items()}
    save_file(sd, str(tmp_path / "fp8.safetensors"))
    contents, read = read_model(tmp_path / "fp8.safetensors")
    assert contents.mmdit_storage == "fp8 without scales (per-tensor scales)"
    qkv = read["joint_blocks.0.x_block.attn.qkv.weight"]
    assert same_bits(qkv.weight, sd["joint_blocks.0.x_block.attn.qkv.weight"]) and qkv.scale.item() == 1.0


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_weight_scales_without_a_marker_are_the_weights_scales(tmp_path, source, prefix):
    path = quantized_files.write_comfy_quant(tmp_path / "unmarked.safetensors", source, "per_channel")

    def without_markers(sd):
        tensors = {prefix + k: v for k, v in sd.items() if not k.endswith(".comfy_quant")}
        sd.clear()
        sd.update(tensors)

    rewrite(path, without_markers)
    assert_read_as_stored(path, source, prefix=prefix)
    assert read_model(path)[0].mmdit_storage == "weight_scale without a format marker (per-channel scales)"


def test_high_precision_file_has_no_fp8(tmp_path, source):
    save_file(source, str(tmp_path / "bf16.safetensors"))
    contents, read = read_model(tmp_path / "bf16.safetensors")
    assert contents.mmdit_storage == "BF16"
    assert all(same_bits(read[k], v) for k, v in source.items())


def rewrite(path, change, metadata=None):
    sd = load_file(str(path))
    change(sd)
    save_file(sd, str(path), metadata=metadata)
    return path


LAYER = "joint_blocks.1.x_block.mlp.fc1"


def comfy_quant_json(config):
    return torch.tensor(list(json.dumps(config).encode()), dtype=torch.uint8)


@pytest.mark.parametrize("change,message", [
    (lambda sd: sd.update({LAYER + ".weight_scale": torch.ones(3)}), "corrupt: the scale of .*fc1.weight is F32 \\[3\\]"),
    (lambda sd: sd.update({LAYER + ".weight_scale": torch.ones(1, 768)}), "fits neither one value per tensor nor one"),
    (lambda sd: sd.update({LAYER + ".comfy_quant": comfy_quant_json({"format": "float8_e4m3fn_fancy"})}),
     "layer .*fc1 has an unknown comfy_quant format 'float8_e4m3fn_fancy'"),
    (lambda sd: sd.update({LAYER + ".comfy_quant": comfy_quant_json({"format": "nvfp4"})}),
     "layer .*fc1 is stored as nvfp4, which this pack does not read"),
    (lambda sd: sd.update({LAYER + ".comfy_quant": torch.tensor([123, 0, 255], dtype=torch.uint8)}),
     "corrupt: .*fc1.comfy_quant is not a comfy_quant JSON object"),
    (lambda sd: sd.update({LAYER + ".weight": sd[LAYER + ".weight"].to(torch.float8_e5m2)}), "stored as F8_E5M2"),
])
def test_bad_fp8_layers_are_refused_before_any_weight_is_read(tmp_path, source, change, message):
    path = rewrite(quantized_files.write_comfy_quant(tmp_path / "bad.safetensors", source), change)
    with pytest.raises(SD35FP8Error, match="bad.safetensors.*" + message):
        read_model(path)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_nan_or_inf_scales(tmp_path, source, bad_value):
    path = rewrite(quantized_files.write_comfy_quant(tmp_path / "bad.safetensors", source),
                   lambda sd: sd.update({LAYER + ".weight_scale": torch.tensor(bad_value)}))
    with pytest.raises(SD35FP8Error, match=f"bad.safetensors has NaN or inf values in {LAYER}.weight_scale"):
        read_model(path)


@pytest.mark.parametrize("header,message", [
    ({"layers": {LAYER: {"format": "mxfp8"}}}, "stored as mxfp8"),
    ({"layers": {LAYER: {"format": "int3_magic"}}}, "unknown comfy_quant format 'int3_magic'"),
    ({"no_layers": {}}, "corrupt: its _quantization_metadata header"),
])
def test_bad_quantization_metadata_header(tmp_path, source, header, message):
    path = quantized_files.write_quantization_metadata(tmp_path / "bad.safetensors", source)
    rewrite(path, lambda sd: None, {"_quantization_metadata": json.dumps(header)})
    with pytest.raises(SD35FP8Error, match="bad.safetensors.*" + message):
        read_model(path)


def test_scaled_fp8_marker_of_e5m2_is_refused(tmp_path, source):
    path = quantized_files.write_scaled_fp8(tmp_path / "e5m2.safetensors", source)
    rewrite(path, lambda sd: sd.update({"scaled_fp8": torch.empty(0, dtype=torch.float8_e5m2)}))
    with pytest.raises(SD35FP8Error, match="e5m2.safetensors holds scaled fp8 weights of type F8_E5M2"):
        read_model(path)
