"""The save node inside the real ComfyUI (in-process): round trips, stock loaders, the converter."""
import errno
import json
import os

import pytest
import torch
from safetensors import safe_open

from devtools import tiny_sd3
from devtools.numerics import relative_error
from sd35_fp8.quant.convert import convert
from sd35_fp8.quant.policy import POLICIES
from sd35_fp8.quant.quantized_weight import QuantizedWeight
from tests.fixtures import quantized_files
from tests.fixtures.quantized_files import same_bits
from tests.nodes.test_loaders import load_checkpoint, load_diffusion_model, mmdit_output, random_inputs

# Stock ComfyUI on the CPU dequantizes each weight exactly as our weight-only path does: only the
# order of fp32 operations may differ (measured 0 on 0.3.75, 3e-7 on 0.33).
STOCK_OUTPUT_BOUND = 1e-5
# A per-tensor file against the per-channel model it was saved from: both about 2.5% weight error,
# rounded twice (measured 1.8-2.1% at the output of the tiny MMDiT).
PER_TENSOR_OUTPUT_BOUND = 0.05


def save(pack, model, name, granularity="per_channel", folder="diffusion_models", overwrite=False, **parts):
    return pack.NODE_CLASS_MAPPINGS["SD35FP8SaveCheckpoint"]().save(model, folder, name, granularity, overwrite, **parts)


def stored_state(model):
    return {k: v.detach().cpu() for k, v in model.model.diffusion_model.state_dict().items()}


@pytest.fixture
def source(models_dir):
    tiny_sd3.write_diffusion_model(models_dir / "diffusion_models" / "source.safetensors", variant="medium",
                                   seed=int(torch.randint(0, 10**6, ())))
    return "source.safetensors"


def test_per_channel_round_trip_is_bit_identical(pack, models_dir, source):
    model = load_diffusion_model(pack, source)
    assert save(pack, model, "saved") == {"ui": {"text": ["diffusion_models/saved.safetensors"]}}
    reloaded = load_diffusion_model(pack, "saved.safetensors")
    before, after = stored_state(model), stored_state(reloaded)
    assert before.keys() == after.keys()
    assert sum(v.dtype == torch.float8_e4m3fn for v in after.values()) == 19
    assert all(same_bits(before[k], after[k]) for k in before)
    inputs = random_inputs()
    assert torch.equal(mmdit_output(reloaded, inputs), mmdit_output(model, inputs))
    assert "19 taken as stored in the file" in reloaded.model.sd35_fp8_origin.report.summary("x")


def test_per_tensor_round_trip(pack, models_dir, source):
    model = load_diffusion_model(pack, source)
    save(pack, model, "tensorwise", "per_tensor")
    reloaded = load_diffusion_model(pack, "tensorwise.safetensors")
    before, after = stored_state(model), stored_state(reloaded)
    with safe_open(str(models_dir / "diffusion_models" / "tensorwise.safetensors"), "pt") as f:
        for key, value in after.items():
            stored = f.get_tensor(key)  # kept tensors: bf16 in the file, the compute dtype in memory
            assert same_bits(value.to(stored.dtype), stored), key
    for key in (k for k in before if k.endswith(".weight_scale")):
        layer = key[: -len("_scale")]
        expected = QuantizedWeight(before[layer], before[key]).per_tensor()
        assert same_bits(after[layer], expected.weight) and same_bits(after[key], expected.scale)
    inputs = random_inputs()
    assert relative_error(mmdit_output(reloaded, inputs), mmdit_output(model, inputs)) < PER_TENSOR_OUTPUT_BOUND


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_converter_writes_the_same_bytes_as_the_save_node(pack, models_dir, source, granularity):
    save(pack, load_diffusion_model(pack, source, "fp8_keep_adaln"), "from_node", granularity)
    folder = models_dir / "diffusion_models"
    convert(folder / source, folder / "from_converter.safetensors", POLICIES["fp8_keep_adaln"], granularity)
    assert (folder / "from_node.safetensors").read_bytes() == (folder / "from_converter.safetensors").read_bytes()


def stock_state(model):
    import comfy.quant_ops
    diffusion_model = model.model.diffusion_model
    qkv, final = diffusion_model.joint_blocks[0].x_block.attn.qkv.weight, diffusion_model.final_layer.linear.weight
    return isinstance(qkv, comfy.quant_ops.QuantizedTensor), isinstance(final, comfy.quant_ops.QuantizedTensor), final.dtype


def test_stock_unet_loader_reads_our_per_tensor_file(pack, models_dir, source):
    import nodes
    save(pack, load_diffusion_model(pack, source), "stock.safetensors", "per_tensor")
    ours = load_diffusion_model(pack, "stock.safetensors")
    (stock,) = nodes.UNETLoader().load_unet("stock.safetensors", "default")
    qkv_quantized, final_quantized, final_dtype = stock_state(stock)
    assert qkv_quantized and not final_quantized and final_dtype in (torch.float32, torch.bfloat16, torch.float16)
    inputs = random_inputs()
    assert relative_error(mmdit_output(stock, inputs), mmdit_output(ours, inputs)) < STOCK_OUTPUT_BOUND


def test_stock_checkpoint_loader_reads_our_checkpoint_with_clip_and_vae(pack, models_dir):
    import comfy.sd
    import comfyui_version
    import nodes
    tiny_sd3.write_checkpoint(models_dir / "checkpoints" / "full.safetensors")
    model, clip, vae = load_checkpoint(pack, "full.safetensors", "fp8_default")
    save(pack, model, "full_fp8", "per_tensor", "checkpoints", clip=clip, vae=vae)
    stock_model, stock_clip, stock_vae = nodes.CheckpointLoaderSimple().load_checkpoint("full_fp8.safetensors")[:3]
    assert stock_clip is not None and stock_vae is not None
    assert stock_state(stock_model)[:2] == (True, False)
    ours, _, _ = load_checkpoint(pack, "full_fp8.safetensors", "fp8_default")
    inputs = random_inputs()
    if comfyui_version.__version__ == "0.3.75":
        # 0.3.75's checkpoint path gives mixed-precision layers no compute dtype when its unet
        # dtype equals the weights' natural one (fp32 on the CPU; bf16/fp16 on GPUs without FP8
        # compute): the first forward fails. 0.33 fixed it. The same loader with the dtype set
        # shows the file itself is right.
        with pytest.raises(NotImplementedError):
            mmdit_output(stock_model, inputs)
        stock_model = comfy.sd.load_checkpoint_guess_config(
            str(models_dir / "checkpoints" / "full_fp8.safetensors"), model_options={"dtype": torch.bfloat16})[0]
    assert relative_error(mmdit_output(stock_model, inputs), mmdit_output(ours, inputs)) < STOCK_OUTPUT_BOUND
    tokens = stock_clip.tokenize("a red fox")
    assert torch.equal(stock_clip.encode_from_tokens(tokens), clip.encode_from_tokens(tokens))


# The layers a LoRA changes are quantized again with it merged: one more rounding of them than the model
# with the LoRA beside its FP8 weights (measured 1.2% at the tiny MMDiT's output; the LoRA itself 20-25%).
BAKED_LORA_OUTPUT_BOUND = 0.05


@pytest.mark.parametrize("in_use", ["not loaded", "with the LoRA", "without the LoRA"])
def test_a_lora_applied_to_the_model_and_its_clip_is_in_the_file(pack, models_dir, in_use):
    """LoraLoader's model and CLIP strengths, baked into a checkpoint, whether the model and CLIP were
    loaded with the LoRA patched in when the save node runs, without it, or not at all. The model's LoRA
    stays beside its FP8 weights when ComfyUI patches them, so the file once held the model without it."""
    import comfy.sd
    from devtools.random_lora import random_lora
    tiny_sd3.write_checkpoint(models_dir / "checkpoints" / "base.safetensors", vae=False,
                              seed=int(torch.randint(0, 10**6, ())))
    model, clip, _ = load_checkpoint(pack, "base.safetensors", "fp8_default")
    lora = random_lora(model.model.diffusion_model.state_dict(), seed=int(torch.randint(0, 10**6, ())), rank=4,
                       std=0.15)
    generator = torch.Generator().manual_seed(int(torch.randint(0, 10**6, ())))
    clip_lora = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    lora[clip_lora + ".lora_up.weight"] = torch.randn(768, 4, generator=generator) * 0.3
    lora[clip_lora + ".lora_down.weight"] = torch.randn(4, 768, generator=generator) * 0.3
    # a layer kept in bf16: ComfyUI merges the LoRA into its weight, and a model sampled before saving has it merged
    final = model.model.diffusion_model.final_layer.linear.weight
    lora["lora_unet_final_layer_linear.lora_up.weight"] = torch.randn(final.shape[0], 4, generator=generator) * 0.1
    lora["lora_unet_final_layer_linear.lora_down.weight"] = torch.randn(4, final.shape[1], generator=generator) * 0.1
    with_lora, clip_with_lora = comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0)
    stored_before = stored_state(model)
    inputs, tokens = random_inputs(), clip.tokenize("a red fox")
    without = {"model": mmdit_output(model, inputs), "clip": clip.encode_from_tokens(tokens).float()}
    with_lora.patch_model()
    expected = {"model": mmdit_output(with_lora, inputs), "clip": clip_with_lora.encode_from_tokens(tokens).float()}
    with_lora.unpatch_model()
    if in_use == "with the LoRA":
        with_lora.patch_model()
        clip_with_lora.encode_from_tokens(tokens)  # ComfyUI keeps the CLIP loaded, its LoRA merged in
    elif in_use == "without the LoRA":
        model.patch_model()
        clip.encode_from_tokens(tokens)
    save(pack, with_lora, "baked", folder="checkpoints", clip=clip_with_lora)
    (with_lora if in_use == "with the LoRA" else model).unpatch_model()

    saved, saved_clip, _ = load_checkpoint(pack, "baked.safetensors", "fp8_default")
    assert relative_error(expected["model"], without["model"]) > 3 * BAKED_LORA_OUTPUT_BOUND, "the LoRA must show"
    assert relative_error(mmdit_output(saved, inputs), expected["model"]) <= BAKED_LORA_OUTPUT_BOUND
    assert all(same_bits(stored_before[k], v) for k, v in stored_state(model).items())
    assert relative_error(expected["clip"], without["clip"]) > 0.05, "the CLIP LoRA must show"
    assert relative_error(saved_clip.encode_from_tokens(tokens).float(), expected["clip"]) <= 1e-3


def test_pre_quantized_file_saved_per_channel_keeps_its_weights(pack, models_dir):
    source = tiny_sd3.mmdit_state_dict("large", prefix="")
    path = quantized_files.write_comfy_quant(models_dir / "diffusion_models" / "stock_fp8.safetensors", source)
    model = load_diffusion_model(pack, "stock_fp8.safetensors")
    save(pack, model, "expanded")
    with safe_open(str(path), "pt") as original, \
            safe_open(str(models_dir / "diffusion_models" / "expanded.safetensors"), "pt") as saved:
        layer = "joint_blocks.0.x_block.attn.qkv"
        assert same_bits(saved.get_tensor(layer + ".weight"), original.get_tensor(layer + ".weight"))
        assert torch.equal(saved.get_tensor(layer + ".weight_scale"),
                           original.get_tensor(layer + ".weight_scale").expand(3 * 128, 1))
        assert json.loads(saved.metadata()["sd35_fp8.layers"])[layer] == "fp8: fp8 as stored in the file"


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs.safetensors", "sub/dir.safetensors", "sub\\dir",
                                  "C:model.safetensors", "", "a..b.safetensors"])
def test_names_that_could_leave_the_folder_are_refused(pack, name):
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="is not allowed: give a plain name"):
        pack.nodes.save.checked_file_name(name)


def test_a_refused_name_writes_nothing_and_a_plain_one_gets_its_suffix(pack, models_dir, source):
    model = load_diffusion_model(pack, source)
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="'../../x' is not allowed"):
        save(pack, model, "../../x")
    assert os.listdir(models_dir / "diffusion_models") == [source]
    assert pack.nodes.save.checked_file_name(" sd3.5 fp8 ") == "sd3.5 fp8.safetensors"


def test_existing_file_is_kept_unless_overwrite(pack, models_dir, source):
    model = load_diffusion_model(pack, source)
    target = models_dir / "diffusion_models" / "taken.safetensors"
    target.write_bytes(b"someone else's model")
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="taken.safetensors already exists in models/diffusion_models"):
        save(pack, model, "taken")
    assert target.read_bytes() == b"someone else's model"
    save(pack, model, "taken", overwrite=True)
    assert load_diffusion_model(pack, "taken.safetensors") is not None


def test_the_file_a_model_was_loaded_from_is_never_replaced(pack, models_dir, source):
    original = (models_dir / "diffusion_models" / source).read_bytes()
    model = load_diffusion_model(pack, source)
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="source.safetensors in models/diffusion_models is the file "
                       "this MODEL was loaded from"):
        save(pack, model, "source", overwrite=True)
    assert (models_dir / "diffusion_models" / source).read_bytes() == original


def test_a_240_character_name_is_saved(pack, models_dir, source):
    """The temporary name beside it must stay within 255 bytes too."""
    name = "sd3.5_medium_fp8_" + "x" * 211 + ".safetensors"
    assert len(name) == 240
    model = load_diffusion_model(pack, source)
    assert save(pack, model, name) == {"ui": {"text": [f"diffusion_models/{name}"]}}
    assert sorted(os.listdir(models_dir / "diffusion_models")) == sorted([source, name])
    assert load_diffusion_model(pack, name) is not None


def test_disk_full_leaves_nothing_and_says_why(pack, models_dir, source, monkeypatch):
    model = load_diffusion_model(pack, source)

    def disk_full(self, name, tensor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pack.quant.files.safetensors_writer.SafetensorsWriter, "write", disk_full)
    with pytest.raises(pack.quant.errors.SD35FP8Error,
                       match="Could not write full.safetensors .*No space left on device.*disk space") as error:
        save(pack, model, "full")
    assert "permission" not in str(error.value)
    assert os.listdir(models_dir / "diffusion_models") == [source]


def test_models_not_from_our_loaders_and_parts_without_a_place(pack, models_dir, source):
    import comfy.sd
    stock = comfy.sd.load_diffusion_model(str(models_dir / "diffusion_models" / source))
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="does not come from Load SD3.5"):
        save(pack, stock, "stock")
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="choose the checkpoints folder to save the CLIP and VAE"):
        save(pack, load_diffusion_model(pack, source), "x", vae=object())
