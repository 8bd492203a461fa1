"""optimum-quanto serialized transformers (made by optimum-quanto itself, diffusers names)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from sd35_fp8.quant.errors import SD35FP8Error
from sd35_fp8.quant.quantized_weight import QuantizedWeight
from tests.fixtures import quantized_files
from tests.fixtures.quantized_files import read_model, same_bits


@pytest.mark.parametrize("qmap_in_metadata", [False, True])
def test_quanto_qfloat8_read_as_stored(tmp_path, source, qmap_in_metadata):
    path = quantized_files.write_quanto(tmp_path / "quanto", source, qmap_in_metadata=qmap_in_metadata)
    stored = load_file(path)
    contents, read = read_model(path)
    assert contents.mmdit_storage == "optimum-quanto (per-channel scales), diffusers names"
    assert read.keys() == source.keys()
    qkv = read["joint_blocks.0.x_block.attn.qkv.weight"]
    parts = [f"transformer_blocks.0.attn.to_{p}.weight" for p in "qkv"]
    assert isinstance(qkv, QuantizedWeight)
    assert same_bits(qkv.weight, torch.cat([stored[p + "._data"] for p in parts]))
    assert torch.equal(qkv.scale, torch.cat([stored[p + "._scale"] for p in parts]).float())
    proj = read["final_layer.linear.weight"]
    assert same_bits(proj.weight, stored["proj_out.weight._data"])
    # dequantized as quanto itself would, within bf16 rounding of its product
    for name, value in read.items():
        if isinstance(value, QuantizedWeight):
            assert value.relative_error(source[name]) < 0.03, name
        else:
            assert same_bits(value, source[name]), name


def test_quanto_int8_is_refused_by_its_qtype(tmp_path, source):
    path = quantized_files.write_quanto(tmp_path / "quanto", source, weights="qint8")
    with pytest.raises(SD35FP8Error, match="optimum-quanto stored .* as 'qint8'; this pack reads qfloat8"):
        read_model(path)
    (tmp_path / "quanto" / "quanto_qmap.json").unlink()
    with pytest.raises(SD35FP8Error, match="stored as I8, not float8_e4m3fn"):
        read_model(path)


def test_quantization_map_of_another_model(tmp_path, source):
    path = quantized_files.write_quanto(tmp_path / "quanto", source)
    (tmp_path / "quanto" / "quanto_qmap.json").write_text(json.dumps({"other": {"weights": "qfloat8"}}))
    with pytest.raises(SD35FP8Error, match="which its optimum-quanto quantization map does not list"):
        read_model(path)
    (tmp_path / "quanto" / "quanto_qmap.json").write_text("[1, 2")
    with pytest.raises(SD35FP8Error, match="quanto_qmap.json is not an optimum-quanto quantization map"):
        read_model(path)
