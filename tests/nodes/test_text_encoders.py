"""The text-encoder nodes and the checkpoint loader's text_encoders option inside the real ComfyUI
(in-process): real-size CLIP-L, CLIP-G at real size in two tests, a narrow T5-XXL (real layout)."""
import json
import os
import re
import shutil
import struct

import pytest
import torch
from safetensors.torch import save_file

from devtools import tiny_sd3
from devtools.built_again import built_again
from devtools.numerics import relative_error
from devtools.tiny_text_encoders import NARROW_T5, scaled_fp8, t5_state_dict

# T5 output (after its final norm) with FP8 linears vs the same weights in fp32, on random token
# ids. Each block's fp8 weights (about 2.6% error each) add about 2.6% to the output, and the 24
# blocks add up roughly as sqrt(24): 12-13% measured on the narrow random T5, where random 2.5%
# weight noise instead of fp8 gives 11.8%.
T5_FP8_ERROR_BOUND = 0.16
TEXT = "a red fox in the snow"
WIDTH = {"clip_l": 768, "clip_g": 1280}


@pytest.fixture(scope="module")
def encoder_files(tmp_path_factory, pack):
    """CLIP-L (real size), narrow T5-XXL (fp16, plain fp8, scaled fp8) in a text_encoders folder."""
    import folder_paths
    folder = tmp_path_factory.mktemp("text_encoders")
    save_file(tiny_sd3.clip_state_dict("clip_l", seed=int(torch.randint(0, 10**6, ()))), folder / "clip_l.safetensors")
    t5 = t5_state_dict(seed=int(torch.randint(0, 10**6, ())))
    save_file(t5, folder / "t5xxl.safetensors")
    save_file({k: v.to(torch.float8_e4m3fn) for k, v in t5.items()}, folder / "t5xxl_fp8_e4m3fn.safetensors")
    save_file(scaled_fp8(t5), folder / "t5xxl_fp8_e4m3fn_scaled.safetensors")
    folder_paths.add_model_folder_path("text_encoders", str(folder), is_default=True)
    return folder


@pytest.fixture(scope="module")
def clip_g_file(encoder_files, clip_g_path):
    """Real-size CLIP-G: only the two tests that need it use it."""
    os.link(clip_g_path, encoder_files / "clip_g.safetensors")
    yield "clip_g.safetensors"
    os.remove(encoder_files / "clip_g.safetensors")


def load(pack, clip_l="none", clip_g="none", t5xxl="none", t5_precision="as stored"):
    (clip,) = pack.NODE_CLASS_MAPPINGS["SD35FP8TextEncoders"]().load(clip_l, clip_g, t5xxl, t5_precision)
    return clip


def encode(clip, text=TEXT):
    import nodes
    ((cond, extra),) = nodes.CLIPTextEncode().encode(clip, text)[0]
    return cond, extra["pooled_output"]


def assert_sd3_conditioning(cond, pooled, encoders):
    """Shapes SD3 expects, and zeros where an encoder is missing, as stock SD3ClipModel gives."""
    clip_tokens = 77 if {"clip_l", "clip_g"} & set(encoders) else 0
    t5_tokens = 77 if "t5xxl" in encoders else 0
    assert cond.shape == (1, max(clip_tokens + t5_tokens, 77), 4096)
    assert pooled.shape == (1, 2048)
    start = 0
    for encoder in ("clip_l", "clip_g"):
        columns, pooled_part = slice(start, start + WIDTH[encoder]), pooled[:, start:start + WIDTH[encoder]]
        start += WIDTH[encoder]
        if clip_tokens:
            assert (cond[:, :77, columns].abs().amax() > 0) == (encoder in encoders), encoder
        assert (pooled_part.abs().amax() > 0) == (encoder in encoders), encoder
    if clip_tokens:
        assert cond[:, :77, 2048:].abs().amax() == 0, "CLIP context is zero-padded to 4096"
    if t5_tokens:
        assert cond[:, clip_tokens:].abs().amax(dim=-1).min() > 0, "every T5 token has values"


def require_narrow_t5_recognised():
    """ComfyUI 0.3.x recognises one or two encoder files as a T5-XXL by their 4096-wide rows; later
    versions by the 10240-wide feed-forward of a real T5-XXL, which the narrow test T5 lacks (three
    files build all three encoders without that check)."""
    import comfy.sd
    wi_1 = torch.empty(NARROW_T5["d_ff"], NARROW_T5["d_model"], device="meta")
    if comfy.sd.detect_te_model({"encoder.block.23.layer.1.DenseReluDense.wi_1.weight": wi_1}) != comfy.sd.TEModel.T5_XXL:
        pytest.skip("this ComfyUI recognises a T5-XXL by the real 10240-wide feed-forward, which the narrow test T5 lacks")


def stock_clip(paths):
    import comfy.sd
    return comfy.sd.load_clip(ckpt_paths=[str(p) for p in paths], clip_type=comfy.sd.CLIPType.SD3)


@pytest.mark.parametrize("encoders", [("clip_l",), ("t5xxl",), ("clip_l", "t5xxl")], ids="+".join)
def test_combinations_without_clip_g(pack, encoder_files, encoders):
    if "t5xxl" in encoders:
        require_narrow_t5_recognised()
    files = {"clip_l": "clip_l.safetensors", "t5xxl": "t5xxl.safetensors"}
    clip = load(pack, **{e: files[e] for e in encoders})
    cond, pooled = encode(clip)
    assert_sd3_conditioning(cond, pooled, encoders)
    if encoders == ("clip_l",):
        stock_cond, stock_pooled = encode(stock_clip([encoder_files / "clip_l.safetensors"]))
        assert torch.equal(cond, stock_cond) and torch.equal(pooled, stock_pooled)


def test_combinations_with_clip_g(pack, encoder_files, clip_g_file):
    for encoders in (("clip_g",), ("clip_l", "clip_g"), ("clip_l", "clip_g", "t5xxl"), ("clip_g", "t5xxl")):
        if encoders == ("clip_g", "t5xxl"):
            require_narrow_t5_recognised()
        files = {"clip_l": "clip_l.safetensors", "clip_g": clip_g_file, "t5xxl": "t5xxl.safetensors"}
        cond, pooled = encode(load(pack, **{e: files[e] for e in encoders}))
        assert_sd3_conditioning(cond, pooled, encoders)
        if encoders == ("clip_l", "clip_g"):
            stock_cond, stock_pooled = encode(stock_clip([encoder_files / "clip_l.safetensors",
                                                          encoder_files / clip_g_file]))
            assert torch.equal(cond, stock_cond) and torch.equal(pooled, stock_pooled)


def test_presets_pick_encoders_and_t5_precision(pack, encoder_files, clip_g_file):
    node = pack.NODE_CLASS_MAPPINGS["SD35FP8TextEncoderPreset"]()
    resident = {}
    for preset in ("full (L+G+T5)", "no T5 (L+G)", "T5 in FP8"):
        (clip,) = node.load(preset, "clip_l.safetensors", clip_g_file, "t5xxl.safetensors")
        model = clip.cond_stage_model
        assert model.clip_l is not None and model.clip_g is not None
        assert (model.t5xxl is None) == (preset == "no T5 (L+G)")
        if model.t5xxl is not None:
            q = model.t5xxl.transformer.encoder.block[0].layer[0].SelfAttention.q.weight
            assert q.dtype == (torch.float8_e4m3fn if preset == "T5 in FP8" else torch.float16)
        resident[preset] = clip.patcher.model_size()
        assert_sd3_conditioning(*encode(clip), [e for e in ("clip_l", "clip_g", "t5xxl") if getattr(model, e) is not None])
    assert resident["no T5 (L+G)"] < resident["T5 in FP8"] < resident["full (L+G+T5)"]


def t5_reference(path):
    """ComfyUI's own T5 class in fp32 with the file's weights: the higher-precision reference."""
    import comfy.ops
    import comfy.text_encoders.t5
    from safetensors.torch import load_file
    config_path = os.path.join(os.path.dirname(comfy.text_encoders.t5.__file__), "t5_config_xxl.json")
    with open(config_path) as f:
        config = {**json.load(f), **NARROW_T5}
    model = comfy.text_encoders.t5.T5(config, torch.float32, "cpu", comfy.ops.manual_cast)
    state_dict = load_file(str(path))
    weights = {k: v.float() for k, v in state_dict.items()}
    if "scaled_fp8" in state_dict:
        weights = {k: v * weights[k[: -len("weight")] + "scale_weight"] if k[: -len("weight")] + "scale_weight" in weights
                   else v for k, v in weights.items()}
    model.load_state_dict(weights, strict=False)
    return model


def t5_output(t5, token_ids):
    with torch.no_grad():
        return t5(token_ids, None)[0].float()


def test_t5_fp8_matches_fp32_and_keeps_embeddings_norms_and_position_bias(pack, encoder_files):
    require_narrow_t5_recognised()
    import comfy.model_management
    reference = t5_reference(encoder_files / "t5xxl.safetensors")
    as_stored = load(pack, t5xxl="t5xxl.safetensors").cond_stage_model.t5xxl.transformer
    clip = load(pack, t5xxl="t5xxl.safetensors", t5_precision="fp8_e4m3fn")
    fp8 = clip.cond_stage_model.t5xxl.transformer
    token_ids = torch.randint(0, 32100, (2, 77))
    expected = t5_output(reference, token_ids)
    assert relative_error(t5_output(as_stored, token_ids), expected) < 1e-4, "the fp32 reference is the same model"
    assert relative_error(t5_output(fp8, token_ids), expected) <= T5_FP8_ERROR_BOUND

    stored = dict(as_stored.named_parameters())
    quantized = {name: module for name, module in fp8.named_modules() if getattr(module, "weight_scale", None) is not None}
    assert len(quantized) == 24 * 7
    for name, module in quantized.items():
        assert module.weight.dtype == torch.float8_e4m3fn and module.weight_scale.shape == (module.weight.shape[0], 1), name
    for name, parameter in fp8.named_parameters():
        if name.rsplit(".", 1)[0] not in quantized:
            assert parameter.dtype == torch.float16 and torch.equal(parameter, stored[name]), name
    kept = {name for name, _ in fp8.named_parameters() if name.rsplit(".", 1)[0] not in quantized}
    assert {"shared.weight", "encoder.final_layer_norm.weight",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "encoder.block.5.layer.1.layer_norm.weight"} <= kept
    assert clip.patcher.model_size() == comfy.model_management.module_size(clip.cond_stage_model)


# A LoRA on T5's FP8 layers stays beside their weights as on the MMDiT's: the T5 tokens' error against the
# fp16 T5 with the same LoRA, measured 0.094-0.097 with it and 0.094 without.
T5_LORA_ERROR_GROWTH = 0.02


def test_a_lora_on_t5_in_fp8_is_applied_as_on_the_fp16_t5(pack, encoder_files):
    """LoraLoader's CLIP strength on T5 layers (OneTrainer's lora_te2_ keys beside a CLIP-L)."""
    require_narrow_t5_recognised()
    import comfy.sd
    from safetensors.torch import load_file
    generator = torch.Generator().manual_seed(int(torch.randint(0, 10**6, ())))
    lora = {}
    for name, weight in load_file(str(encoder_files / "t5xxl.safetensors")).items():
        if name.startswith("encoder.block.") and name.endswith((".SelfAttention.q.weight", ".wi_0.weight", ".wo.weight")):
            key = "lora_te2_" + name[: -len(".weight")].replace(".", "_")
            lora[key + ".lora_up.weight"] = torch.randn(weight.shape[0], 4, generator=generator) * 0.02
            lora[key + ".lora_down.weight"] = torch.randn(4, weight.shape[1], generator=generator) * 0.02
    clips = {precision: load(pack, clip_l="clip_l.safetensors", t5xxl="t5xxl.safetensors", t5_precision=precision)
             for precision in ("as stored", "fp8_e4m3fn")}

    def t5_tokens(clip):
        return encode(clip)[0][:, 77:].float()

    without = {p: t5_tokens(clip) for p, clip in clips.items()}
    with_lora = {p: t5_tokens(comfy.sd.load_lora_for_models(None, clip, lora, 0.0, 1.0)[1]) for p, clip in clips.items()}
    assert relative_error(with_lora["as stored"], without["as stored"]) > 0.05, "the LoRA must show"
    growth = (relative_error(with_lora["fp8_e4m3fn"], with_lora["as stored"])
              - relative_error(without["fp8_e4m3fn"], without["as stored"]))
    assert growth <= T5_LORA_ERROR_GROWTH
    assert torch.equal(t5_tokens(clips["fp8_e4m3fn"]), without["fp8_e4m3fn"])


@pytest.mark.parametrize("precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_t5_cast_precisions(pack, encoder_files, precision, dtype):
    require_narrow_t5_recognised()
    t5 = load(pack, t5xxl="t5xxl.safetensors", t5_precision=precision).cond_stage_model.t5xxl.transformer
    assert {p.dtype for p in t5.parameters()} == {dtype}


@pytest.mark.parametrize("precision", ["as stored", "fp8_e4m3fn", "fp16"])
@pytest.mark.parametrize("file_name", ["t5xxl_fp8_e4m3fn.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors"])
def test_fp8_t5_files_load_as_they_are(pack, encoder_files, file_name, precision):
    require_narrow_t5_recognised()
    clip = load(pack, t5xxl=file_name, t5_precision=precision)
    t5 = clip.cond_stage_model.t5xxl.transformer
    assert t5.encoder.block[3].layer[1].DenseReluDense.wo.weight.dtype == torch.float8_e4m3fn
    token_ids = torch.randint(0, 32100, (2, 77))
    # ComfyUI's own scaled-fp8 layers apply scale_weight: the output is the dequantized model's
    assert relative_error(t5_output(t5, token_ids), t5_output(t5_reference(encoder_files / file_name), token_ids)) < 1e-3
    assert_sd3_conditioning(*encode(clip), ["t5xxl"])


def write_wrong_t5(path, config_changes=None, extra=None):
    state_dict = t5_state_dict({**NARROW_T5, **(config_changes or {})})
    state_dict.update(extra or {})
    save_file(state_dict, str(path))


def write_short_clip(path):
    """CLIP-L's layout with 6 layers instead of 12."""
    state_dict = tiny_sd3.clip_state_dict("clip_l")
    save_file({k: v for k, v in state_dict.items() if not re.search(r"\.layers\.([6-9]|1[01])\.", k)}, str(path))


def write_narrow_clip_l_in_checkpoint_names(path):
    """CLIP-L's 12 layers, 64 wide instead of 768, under the key names a checkpoint embeds it with
    (text_encoders.clip_l.transformer.): no MMDiT key in it."""
    state_dict = {}
    for i in range(12):
        layer = f"text_encoders.clip_l.transformer.text_model.encoder.layers.{i}."
        state_dict[layer + "layer_norm1.weight"] = torch.ones(64)
        state_dict[layer + "self_attn.q_proj.weight"] = torch.zeros(64, 64)
    save_file(state_dict, str(path))


WRONG_FILES = [  # (slot, file name, writer, what the message says)
    ("clip_l", "t5_in_clip_l.safetensors", lambda p: os.link(p.parent / "t5xxl.safetensors", p), "is a T5-XXL text encoder, not a CLIP-L: pick it in t5xxl"),
    ("t5xxl", "clip_l_in_t5.safetensors", lambda p: os.link(p.parent / "clip_l.safetensors", p),
     "is a CLIP-L text encoder, not a T5-XXL: pick it in clip_l"),
    ("clip_g", "short_clip.safetensors", write_short_clip,
     "a CLIP text encoder 768 wide with 6 layers, where SD3.5's CLIP-G is 1280 wide with 32 layers"),
    ("clip_l", "narrow_clip_l.safetensors", write_narrow_clip_l_in_checkpoint_names,
     "is a CLIP-L with unexpected shapes (a CLIP text encoder 64 wide with 12 layers, where SD3.5's CLIP-L is 768 "
     "wide with 12 layers)"),
    ("t5xxl", "umt5.safetensors", lambda p: write_wrong_t5(p, extra={
        "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": torch.zeros(32, 2, dtype=torch.float16)}),
     "a UMT5 or mT5 text encoder"),
    ("t5xxl", "t5_xl.safetensors", lambda p: write_wrong_t5(p, {"d_model": 2048}), "a T5-XL text encoder"),
    ("clip_l", "vae.safetensors", lambda p: save_file(tiny_sd3.taesd_vae_state_dict(), str(p)), "is a VAE"),
    ("t5xxl", "sd35_checkpoint.safetensors", lambda p: tiny_sd3.write_checkpoint(p, clip_l=False, vae=False),
     "SD3 / SD3.5 checkpoint"),
]


@pytest.mark.parametrize("slot, file_name, write, found", WRONG_FILES, ids=[case[1] for case in WRONG_FILES])
def test_wrong_file_is_refused_with_what_it_is(pack, encoder_files, slot, file_name, write, found):
    write(encoder_files / file_name)
    with pytest.raises(pack.quant.errors.SD35FP8Error) as error:
        load(pack, **{slot: file_name})
    message = str(error.value)
    assert message.startswith(f"{slot}: {file_name} ") and found in message, message
    if "pick it in" not in message:
        assert "models/text_encoders" in message and "clip_l.safetensors" in message, message
    if "checkpoint" not in file_name:
        assert "Load SD3.5 Checkpoint" not in message, message


def test_no_encoder_chosen_is_refused(pack, encoder_files):
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="all 'none'.*models/text_encoders"):
        load(pack)


def test_preset_without_its_t5_file_is_refused(pack, encoder_files):
    node = pack.NODE_CLASS_MAPPINGS["SD35FP8TextEncoderPreset"]()
    with pytest.raises(pack.quant.errors.SD35FP8Error, match=r"needs a T5-XXL file.*'no T5 \(L\+G\)'"):
        node.load("T5 in FP8", "clip_l.safetensors", "clip_l.safetensors", "none")


NAN_T5_KEY = "text_encoders.t5xxl.transformer.encoder.block.7.layer.1.DenseReluDense.wo.weight"


def copy_with_nan(source, destination, key):
    """A copy of a safetensors file with the first value of an fp16 tensor set to NaN."""
    shutil.copyfile(source, destination)
    with open(destination, "r+b") as f:
        (header_length,) = struct.unpack("<Q", f.read(8))
        start = json.loads(f.read(header_length))[key]["data_offsets"][0]
        f.seek(8 + header_length + start)
        f.write(torch.tensor([float("nan")], dtype=torch.float16).view(torch.uint8).numpy().tobytes())


@pytest.fixture(scope="module")
def t5_checkpoints(tmp_path_factory, pack):
    """Tiny SD3.5 checkpoints embedding CLIP-L and the narrow T5 (also with a NaN in T5), or T5 alone."""
    import folder_paths
    folder = tmp_path_factory.mktemp("checkpoints")
    state_dict = tiny_sd3.mmdit_state_dict()
    state_dict.update(t5_state_dict(prefix="text_encoders.t5xxl.transformer."))
    save_file(state_dict, str(folder / "only_t5.safetensors"))
    state_dict.update(tiny_sd3.clip_state_dict("clip_l", prefix="text_encoders.clip_l.transformer."))
    save_file(state_dict, str(folder / "with_t5.safetensors"))
    copy_with_nan(folder / "with_t5.safetensors", folder / "nan_t5.safetensors", NAN_T5_KEY)
    folder_paths.add_model_folder_path("checkpoints", str(folder), is_default=True)
    return folder


def load_checkpoint_clip(pack, name, text_encoders):
    _, clip, _ = pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]().load(name, "fp8_default", text_encoders=text_encoders)
    return clip


@pytest.mark.parametrize("option, t5_dtype", [("as stored", torch.float16), ("T5 in FP8", torch.float8_e4m3fn)])
def test_checkpoint_text_encoders_option(pack, t5_checkpoints, option, t5_dtype):
    require_narrow_t5_recognised()
    clip = load_checkpoint_clip(pack, "with_t5.safetensors", option)
    assert clip.cond_stage_model.t5xxl.transformer.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == t5_dtype
    assert_sd3_conditioning(*encode(clip), ["clip_l", "t5xxl"])


def test_checkpoint_drop_t5_never_reads_t5(pack, t5_checkpoints):
    with pytest.raises(pack.quant.errors.SD35FP8Error, match=f"NaN or inf values in {NAN_T5_KEY}"):
        load_checkpoint_clip(pack, "nan_t5.safetensors", "as stored")
    clip = load_checkpoint_clip(pack, "nan_t5.safetensors", "drop T5")
    assert clip.cond_stage_model.t5xxl is None
    assert_sd3_conditioning(*encode(clip), ["clip_l"])


def test_checkpoint_with_only_t5_cannot_drop_it(pack, t5_checkpoints):
    clip = load_checkpoint_clip(pack, "only_t5.safetensors", "drop T5")
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="embeds only a T5-XXL.*'drop T5' leaves no text encoder"):
        clip.tokenize("a red fox")


@pytest.mark.parametrize("saved_by", ["save node", "stock CLIPSave"])
def test_a_t5_in_fp8_saved_loads_back_as_it_was(pack, encoder_files, models_dir, output_dir, saved_by):
    """Before, the save node failed on a CLIP with T5 in FP8 (AttributeError), and a T5 file ComfyUI's Save
    CLIP wrote of it (each fp8 weight with its scale, unmarked) loaded with scale 1 (1.19 from it)."""
    require_narrow_t5_recognised()
    from comfy_extras.nodes_model_merging import CLIPSave
    clip = load(pack, clip_l="clip_l.safetensors", t5xxl="t5xxl.safetensors", t5_precision="fp8_e4m3fn")
    if saved_by == "save node":
        tiny_sd3.write_diffusion_model(models_dir / "diffusion_models" / "tiny.safetensors", variant="medium")
        (model,) = pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]().load("tiny.safetensors", "fp8_default")
        pack.NODE_CLASS_MAPPINGS["SD35FP8SaveCheckpoint"]().save(model, "checkpoints", "with_t5", "per_channel", False,
                                                                 clip=clip)
        saved = load_checkpoint_clip(pack, "with_t5.safetensors", "as stored")
    else:
        CLIPSave().save(clip, "te/saved")
        (t5_file,) = (output_dir / "te").glob("saved_t5xxl_*.safetensors")
        shutil.copy(t5_file, encoder_files / "t5_saved_by_stock.safetensors")
        try:
            saved = load(pack, clip_l="clip_l.safetensors", t5xxl="t5_saved_by_stock.safetensors")
        finally:
            os.remove(encoder_files / "t5_saved_by_stock.safetensors")
    t5 = saved.cond_stage_model.t5xxl.transformer
    assert t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(encode(saved)[0], encode(clip)[0])


def test_comfyui_can_load_our_clip_again_outside_dynamic_vram(pack, encoder_files):
    """As for the MODEL (tests/nodes/test_loaders.py): ComfyUI 0.33 reloads a CLIP's patcher outside
    DynamicVRAM for conditioning hooks (Set CLIP Hooks: clip.clone(disable_dynamic=True)) and raises for
    a loader that does not say how; clone(force_deepcopy=True) takes that path on any device."""
    clip = load(pack, clip_l="clip_l.safetensors")
    copy = built_again(clip.patcher)
    assert copy.model is not clip.patcher.model
    loaded, again = clip.patcher.model.state_dict(), copy.model.state_dict()
    assert loaded.keys() == again.keys()
    for name, tensor in loaded.items():
        assert torch.equal(again[name], tensor), name
