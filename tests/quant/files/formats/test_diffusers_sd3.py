"""diffusers SD3 transformers: ComfyUI's names and tensors, exactly."""
import pytest

from devtools.tiny_sd3 import mmdit_state_dict
from sd35_fp8.quant.files.formats.model_files import read_model_header
from sd35_fp8.quant.layouts.sd35_layout import read_contents
from tests.fixtures import quantized_files
from tests.fixtures.quantized_files import read_model, same_bits


@pytest.mark.parametrize("variant", ["large", "medium"])
def test_single_file_reads_as_comfyui_names(tmp_path, variant):
    source = mmdit_state_dict(variant, depth=3, prefix="", attn2_blocks={0, 1} if variant == "medium" else None)
    path = quantized_files.write_diffusers(tmp_path / "transformer", source)
    contents, read = read_model(path)
    assert contents.mmdit_storage == "BF16, diffusers names"
    assert contents.mmdit.depth == 3 and contents.mmdit.attn2_blocks == (2 if variant == "medium" else 0)
    assert read.keys() == source.keys()
    assert all(same_bits(read[k], v) for k, v in source.items())


def test_tensors_comfyui_has_no_place_for_are_left_out(tmp_path, source):
    path = quantized_files.write_diffusers(tmp_path / "transformer", source)
    header = read_model_header(path)
    header.tensors["transformer_blocks.0.extra.weight"] = header.tensors["proj_out.weight"]
    assert "transformer_blocks.0.extra.weight" not in {s.key for e in read_contents(header).mmdit_plan for s in e.sources}


def test_plan_shapes_are_comfyui_shapes(tmp_path, source):
    path = quantized_files.write_diffusers(tmp_path / "transformer", source)
    plan = read_contents(read_model_header(path)).mmdit_plan
    assert {entry.name: tuple(entry.shape) for entry in plan} == {k: tuple(v.shape) for k, v in source.items()}
