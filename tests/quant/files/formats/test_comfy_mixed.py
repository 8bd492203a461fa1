"""This pack's file: what stock ComfyUI needs, and the metadata that says how it was made."""
import hashlib
import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from devtools.comfy_host import REPO
from sd35_fp8.quant.convert import convert
from sd35_fp8.quant.errors import SD35FP8Error
from sd35_fp8.quant.policy import POLICIES
from tests.fixtures.quantized_files import read_model


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_layout_and_metadata(tmp_path, source, granularity):
    save_file(source, str(tmp_path / "source.safetensors"))
    convert(tmp_path / "source.safetensors", tmp_path / "fp8.safetensors", POLICIES["fp8_keep_adaln"], granularity)
    with safe_open(str(tmp_path / "fp8.safetensors"), "pt") as f:
        metadata, keys = f.metadata(), set(f.keys())
        layers = json.loads(metadata["sd35_fp8.layers"])
        quantized = {name for name, decision in layers.items() if decision.startswith("fp8: ")}
        assert "joint_blocks.0.x_block.attn.qkv" in quantized and "joint_blocks.0.x_block.adaLN_modulation.1" not in quantized
        assert layers["final_layer.linear"].startswith("kept: final projection")
        for layer in quantized:
            assert f.get_tensor(layer + ".weight").dtype == torch.float8_e4m3fn
            scale = f.get_tensor(layer + ".weight_scale")
            assert scale.dtype == torch.float32 and scale.shape == (() if granularity == "per_tensor" else (scale.numel(), 1))
            assert json.loads(bytes(f.get_tensor(layer + ".comfy_quant").tolist())) == {
                "format": "float8_e4m3fn", "full_precision_matrix_mult": True}
        high_precision = [k for k in keys if not k.endswith((".weight_scale", ".comfy_quant")) and k[: -len(".weight")] not in quantized]
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in high_precision)
    header_layers = json.loads(metadata["_quantization_metadata"])["layers"]
    assert set(header_layers) == quantized and all(v["format"] == "float8_e4m3fn" for v in header_layers.values())
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)[1]
    assert metadata["sd35_fp8.pack_version"] == version and metadata["sd35_fp8.format_version"] == "1"
    assert metadata["sd35_fp8.policy"] == "fp8_keep_adaln" and metadata["sd35_fp8.granularity"] == granularity
    assert ("requantized" in metadata["sd35_fp8.granularity_note"]) == (granularity == "per_tensor")
    [source_entry] = json.loads(metadata["sd35_fp8.source"])
    assert source_entry == {"file": "source.safetensors",
                            "sha256": hashlib.sha256((tmp_path / "source.safetensors").read_bytes()).hexdigest()}


def test_newer_format_version_is_refused(tmp_path, source):
    save_file(source, str(tmp_path / "future.safetensors"), metadata={"sd35_fp8.format_version": "2"})
    with pytest.raises(SD35FP8Error, match="future.safetensors was written by a newer SD3.5 FP8 pack .*update the pack"):
        read_model(tmp_path / "future.safetensors")
