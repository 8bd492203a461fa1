import pytest
import torch
from safetensors.torch import save_file

from devtools.tiny_sd3 import (mmdit_state_dict, taesd_vae_state_dict, write_diffusion_model,
                                     write_flux_like, write_sdxl_like)
from sd35_fp8.quant.errors import SD35FP8Error
from sd35_fp8.quant.files.safetensors_file import read_header
from sd35_fp8.quant.layouts.sd35_layout import read_contents


def shapes_only_file(path, state_dict, metadata=None):
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path), metadata=metadata)
    return path


def test_single_file_checkpoint_parts(tmp_path):
    sd = mmdit_state_dict("medium", depth=2)
    sd.update(taesd_vae_state_dict())
    sd["text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"] = torch.ones(768)
    contents = read_contents(read_header(shapes_only_file(tmp_path / "ckpt.safetensors", sd)))
    assert contents.mmdit_prefix == "model.diffusion_model."
    assert contents.text_encoders == ("clip_l",)
    assert contents.vae_keys and all(k.startswith("first_stage_model.") for k in contents.vae_keys)
    assert all(k.startswith("model.diffusion_model.") for k in contents.mmdit_keys)
    assert contents.mmdit.depth == 2 and contents.mmdit.attn2_blocks == 1 and contents.mmdit.qk_norm


def test_diffusion_model_file(tmp_path):
    contents = read_contents(read_header(write_diffusion_model(tmp_path / "dm.safetensors", depth=1)))
    assert contents.mmdit_prefix == "" and not contents.text_encoders and not contents.vae_keys
    assert "SD3-family MMDiT (depth 1" in contents.mmdit.model_name


def fake_official(depth, attn2, qk_norm=True):
    """Every key of an official model; only x_embedder, which detection measures, at its real shape."""
    with torch.device("meta"):
        names = mmdit_state_dict(depth=depth, prefix="", attn2_blocks=set(range(attn2)), device="meta")
    sd = {k: torch.zeros(1) for k in names if qk_norm or not k.endswith((".ln_q.weight", ".ln_k.weight"))}
    sd["x_embedder.proj.weight"] = torch.zeros(64 * depth, 16, 2, 2)
    return sd


@pytest.mark.parametrize("depth,attn2,qk_norm,title,expected", [
    (38, 0, True, "", "SD3.5 Large"),
    (38, 0, True, "Stable Diffusion 3.5 Large Turbo", "SD3.5 Large Turbo"),
    (24, 13, True, "", "SD3.5 Medium"),
    (24, 0, False, "", "SD3 Medium"),
])
def test_official_models_are_named(tmp_path, depth, attn2, qk_norm, title, expected):
    path = shapes_only_file(tmp_path / "m.safetensors", fake_official(depth, attn2, qk_norm),
                            {"modelspec.title": title})
    assert read_contents(read_header(path)).mmdit.model_name == expected


@pytest.mark.parametrize("writer,family", [(write_flux_like, "Flux"), (write_sdxl_like, "SDXL")])
def test_other_families_are_named(tmp_path, writer, family):
    path = writer(tmp_path / "other.safetensors")
    with pytest.raises(SD35FP8Error, match=f"other.safetensors is not an SD3 / SD3.5 model: it is {family}"):
        read_contents(read_header(path))


def test_unknown_file(tmp_path):
    path = shapes_only_file(tmp_path / "random.safetensors", {"foo": torch.zeros(3)})
    with pytest.raises(SD35FP8Error, match="no SD3 MMDiT weights"):
        read_contents(read_header(path))


def test_diffusers_flux_is_named(tmp_path):
    path = shapes_only_file(tmp_path / "flux.safetensors", {"single_transformer_blocks.0.attn.to_q.weight": torch.zeros(1, 1),
                                                           "x_embedder.weight": torch.zeros(1, 1)})
    with pytest.raises(SD35FP8Error, match="it is a diffusers-format Flux transformer"):
        read_contents(read_header(path))


@pytest.mark.parametrize("removed, prefix", [
    (("final_layer.linear.weight", "final_layer.linear.bias"), "model.diffusion_model."),
    (("joint_blocks.1.x_block.attn.ln_k.weight",), ""),
    (("joint_blocks.0.x_block.attn2.proj.bias",), ""),
    (("pos_embed", "y_embedder.mlp.2.weight"), "model.diffusion_model."),
])
def test_a_tensor_the_model_needs_is_missing(tmp_path, removed, prefix):
    sd = mmdit_state_dict("medium", depth=2, prefix=prefix)
    for key in removed:
        del sd[prefix + key]
    path = shapes_only_file(tmp_path / "cut.safetensors", sd)
    with pytest.raises(SD35FP8Error, match=f"cut.safetensors lacks {len(removed)} tensors? SD3.5's MMDiT needs") as error:
        read_contents(read_header(path))
    assert all(prefix + key in str(error.value) for key in removed)


def test_missing_joint_blocks_are_missing_tensors(tmp_path):
    # depth 3 by its widths, two blocks in the file
    sd = {k: v for k, v in mmdit_state_dict(depth=3, prefix="").items() if not k.startswith("joint_blocks.2.")}
    path = shapes_only_file(tmp_path / "two_of_three.safetensors", sd)
    with pytest.raises(SD35FP8Error, match=r"lacks 18 tensors .*joint_blocks\.2\.context_block\.attn\.qkv\.weight"):
        read_contents(read_header(path))
