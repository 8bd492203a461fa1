"""Our loader nodes inside the real ComfyUI (in-process), on tiny SD3.5-layout checkpoints."""
import logging

import pytest
import torch
from safetensors.torch import save_file

from devtools.built_again import built_again
from devtools.numerics import relative_error
from devtools.tiny_sd3 import mmdit_state_dict, write_checkpoint, write_diffusion_model
from tests.fixtures import adapters

# Output of the whole tiny MMDiT with fp8 linears vs the unquantized model, on random inputs.
# Per-channel fp8 weights carry about 2.5% error each; through two joint blocks the output
# stays under 5% (measured 1.5-2.5%).
OUTPUT_ERROR_BOUND = 0.05


def load_checkpoint(pack, name, policy, **options):
    return pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]().load(name, policy, **options)


def load_diffusion_model(pack, name, policy="fp8_default"):
    return pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]().load(name, policy)[0]


def mmdit_output(model_patcher, inputs):
    with torch.no_grad():
        return model_patcher.model.diffusion_model(**inputs).float()


def random_inputs(hidden_tokens=77):
    return {"x": torch.randn(2, 16, 16, 16), "timesteps": torch.rand(2) * 1000,
            "context": torch.randn(2, hidden_tokens, 4096), "y": torch.randn(2, 2048)}


@pytest.mark.parametrize("variant", ["large", "medium"])
def test_fp8_model_matches_unquantized_and_keeps_high_precision_layers(pack, models_dir, variant):
    write_checkpoint(models_dir / "checkpoints" / f"{variant}.safetensors", variant=variant,
                     seed=int(torch.randint(0, 10**6, ())))
    fp8_model, clip, vae = load_checkpoint(pack, f"{variant}.safetensors", "fp8_default")
    reference, _, _ = load_checkpoint(pack, f"{variant}.safetensors", "off")
    inputs = random_inputs()
    assert relative_error(mmdit_output(fp8_model, inputs), mmdit_output(reference, inputs)) <= OUTPUT_ERROR_BOUND

    compute_dtype = fp8_model.model.get_dtype()
    diffusion_model = fp8_model.model.diffusion_model
    params = dict(diffusion_model.named_parameters())
    for name in ("final_layer.linear.weight", "final_layer.adaLN_modulation.1.weight", "x_embedder.proj.weight",
                 "t_embedder.mlp.0.weight", "y_embedder.mlp.2.weight", "context_embedder.weight",
                 "joint_blocks.0.x_block.attn.ln_q.weight"):
        assert params[name].dtype == compute_dtype, name
    quantized = [n for n, m in diffusion_model.named_modules() if getattr(m, "weight_scale", None) is not None]
    assert all(params[n + ".weight"].dtype == torch.float8_e4m3fn for n in quantized)
    # block 0: 5 + 5 linears (+ attn2 qkv/proj in Medium); block 1: pre-only context 2 + x 5
    assert len(quantized) == 17 + (2 if variant == "medium" else 0)
    assert len(quantized) == sum(1 for p in params.values() if p.dtype == torch.float8_e4m3fn)
    assert fp8_model.model_size() < reference.model_size()


@pytest.mark.parametrize("flag", ["fp8_e4m3fn_unet", "fp8_e5m2_unet"])
def test_comfyuis_fp8_unet_option_leaves_the_kept_layers_high_precision(pack, models_dir, monkeypatch, flag):
    """ComfyUI started with --fp8_e4m3fn-unet (or e5m2), which low-VRAM setups use: before, the loader took its
    fp8 dtype for the kept layers too, the final projection and embedders stored in fp8 without scales
    (after 4 steps of the tiny model 0.058 from the unquantized model, 0.114 with e5m2, against 0.029)."""
    from comfy.cli_args import args
    write_checkpoint(models_dir / "checkpoints" / "flag.safetensors", variant="medium",
                     seed=int(torch.randint(0, 10**6, ())))
    reference, _, _ = load_checkpoint(pack, "flag.safetensors", "off")
    monkeypatch.setattr(args, flag, True)
    fp8_model, _, _ = load_checkpoint(pack, "flag.safetensors", "fp8_default")
    diffusion_model = fp8_model.model.diffusion_model
    for kept in (diffusion_model.final_layer.linear, diffusion_model.x_embedder.proj, diffusion_model.context_embedder):
        assert kept.weight.dtype in (torch.float16, torch.bfloat16, torch.float32)
    inputs = random_inputs()
    assert relative_error(mmdit_output(fp8_model, inputs), mmdit_output(reference, inputs)) <= OUTPUT_ERROR_BOUND


def test_memory_accounting_is_real_storage(pack, models_dir):
    write_checkpoint(models_dir / "checkpoints" / "mem.safetensors", clip_l=False, vae=False)
    fp8_model, _, _ = load_checkpoint(pack, "mem.safetensors", "fp8_default")
    stored = sum(t.numel() * t.element_size() for t in fp8_model.model.state_dict().values())
    assert fp8_model.model_size() == stored


def test_outputs_are_what_the_file_has_whatever_is_connected(pack, models_dir):
    """ComfyUI caches a node's outputs by its inputs: a loader that looked at which outputs a prompt
    connects handed a later prompt, which connects more, the first one's missing CLIP and VAE."""
    import comfy.sd
    loader = pack.NODE_CLASS_MAPPINGS["SD35FP8CheckpointLoader"]
    assert "hidden" not in loader.INPUT_TYPES()
    write_checkpoint(models_dir / "checkpoints" / "full.safetensors")
    _, clip, vae = load_checkpoint(pack, "full.safetensors", "fp8_default")
    assert isinstance(clip, comfy.sd.CLIP) and isinstance(vae, comfy.sd.VAE)


def test_missing_parts_say_what_to_do_where_they_are_used(pack, models_dir):
    import nodes
    write_checkpoint(models_dir / "checkpoints" / "bare.safetensors", clip_l=False, vae=False)
    model, clip, vae = load_checkpoint(pack, "bare.safetensors", "fp8_default")
    assert model is not None
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="bare.safetensors has no text encoders.*TripleCLIPLoader"):
        nodes.CLIPTextEncode().encode(clip, "a red fox")
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="bare.safetensors has no VAE.*Load VAE"):
        nodes.VAEDecode().decode(vae, {"samples": torch.zeros(1, 16, 8, 8)})
    # what ComfyUI 0.33's RAM-pressure cache asks of cached outputs: an absent attribute, not an error
    assert not hasattr(vae, "is_dynamic") and getattr(clip, "patcher", None) is None


@pytest.mark.parametrize("folder, prefix", [("checkpoints", "model.diffusion_model."), ("diffusion_models", "")])
def test_a_file_without_its_final_layer_is_refused(pack, models_dir, folder, prefix):
    """ComfyUI itself only logs "unet missing" and samples black images."""
    state_dict = mmdit_state_dict(prefix=prefix)
    for key in [k for k in state_dict if k.startswith(prefix + "final_layer.linear.")]:
        del state_dict[key]
    save_file(state_dict, str(models_dir / folder / "no_final_layer.safetensors"))
    loader = load_checkpoint if folder == "checkpoints" else load_diffusion_model
    with pytest.raises(pack.quant.errors.SD35FP8Error,
                       match=f"no_final_layer.safetensors lacks 2 tensors .*{prefix}final_layer.linear.weight"):
        loader(pack, "no_final_layer.safetensors", "fp8_default")


def test_diffusion_model_loader(pack, models_dir):
    write_diffusion_model(models_dir / "diffusion_models" / "dm.safetensors", variant="medium")
    model = load_diffusion_model(pack, "dm.safetensors", "fp8_keep_adaln")
    diffusion_model = model.model.diffusion_model
    assert diffusion_model.joint_blocks[0].x_block.attn2.qkv.weight.dtype == torch.float8_e4m3fn
    assert diffusion_model.joint_blocks[0].x_block.adaLN_modulation[1].weight.dtype == model.model.get_dtype()
    assert torch.isfinite(mmdit_output(model, random_inputs())).all()


@pytest.fixture
def lora_on_fp8_layer(pack, models_dir, tmp_path):
    """A model from our loader, a rank-4 LoRA on one fp8 layer through the stock LoraLoader, and
    what that layer must compute with the LoRA merged."""
    import folder_paths
    import nodes
    write_checkpoint(models_dir / "checkpoints" / "lora_base.safetensors", clip_l=False, vae=False)
    model, _, _ = load_checkpoint(pack, "lora_base.safetensors", "fp8_default")
    layer = model.model.diffusion_model.joint_blocks[0].x_block.attn.qkv
    out_features, in_features = layer.weight.shape
    rank = 4
    # A fixed LoRA (its effect on the layer, about 15%, must stand clear of fp8 noise); the model
    # weights and the layer inputs stay fresh random draws.
    generator = torch.Generator().manual_seed(1)
    up = torch.randn(out_features, rank, generator=generator) * 0.08
    down = torch.randn(rank, in_features, generator=generator) * 0.08
    (tmp_path / "loras").mkdir()
    save_file({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight": up,
               "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": down},
              str(tmp_path / "loras" / "tiny_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"), is_default=True)
    # the file has no CLIP: its CLIP output would stop LoraLoader, saying so
    patched, _ = nodes.LoraLoader().load_lora(model, None, "tiny_lora.safetensors", 1.0, 0.0)
    weight_before = layer.weight.float() * layer.weight_scale
    return patched, layer, weight_before, weight_before + up @ down


# The LoRA stays beside the FP8 weight at full precision: what is left is the FP8 weight's own
# error (about 2.5-3%).
LORA_BOUND = 0.04


def layer_output(layer, x):
    with torch.no_grad():
        return layer(x).float()


def test_stock_lora_loader_keeps_the_lora_beside_the_fp8_weight_and_unpatches_exactly(lora_on_fp8_layer):
    patched, layer, weight_before, expected = lora_on_fp8_layer
    stored_before = layer.weight.detach().clone()
    x = torch.randn(3, layer.weight.shape[1], dtype=layer.bias.dtype)
    out_before = layer_output(layer, x)
    patched.patch_model()
    out = layer_output(layer, x)
    bias = layer.bias.float()
    assert torch.equal(layer.weight.view(torch.uint8), stored_before.view(torch.uint8))
    assert layer.weight.sd35_low_rank.up.dtype == layer.compute_dtype == patched.model.get_dtype()
    assert layer.weight.sd35_low_rank.columns is None  # only the row-wise FP8 path with Triton takes them
    assert relative_error(out, x.float() @ expected.t() + bias) <= LORA_BOUND
    assert relative_error(weight_before, expected) > 0.1, "the LoRA must change the layer"
    patched.unpatch_model()
    assert torch.equal(layer.weight.view(torch.uint8), stored_before.view(torch.uint8))
    assert torch.equal(layer_output(layer, x), out_before)


@pytest.mark.parametrize("low_vram", [False, True])
def test_a_lora_at_model_strength_0_leaves_every_layer_as_it_is(pack, models_dir, low_vram):
    """LoraLoader with model strength 0 beside a CLIP strength patches the model with its own weights: no
    layer takes a side path (on the row-wise FP8 path, building its FP8 columns failed on rank 0), and the
    output is the model's bit for bit."""
    import comfy.sd
    from devtools.random_lora import random_lora
    from sd35_fp8.nodes.comfy_versions import call_patches
    write_checkpoint(models_dir / "checkpoints" / "base.safetensors", clip_l=False, vae=False)
    model, _, _ = load_checkpoint(pack, "base.safetensors", "fp8_default")
    lora = random_lora(model.model.diffusion_model.state_dict(), seed=3, rank=4)
    at_zero, _ = comfy.sd.load_lora_for_models(model, None, lora, 0.0, 0.0)
    assert len(at_zero.patches) == len(lora) // 2  # every qkv and fc1
    inputs = random_inputs()
    before = mmdit_output(model, inputs)
    if low_vram:
        at_zero.load(torch.device("cpu"), lowvram_model_memory=1)  # patches run per call
    else:
        at_zero.patch_model()
    layers = [m for m in at_zero.model.diffusion_model.modules() if getattr(m, "weight_scale", None) is not None]
    assert torch.equal(mmdit_output(at_zero, inputs), before)
    assert all(call_patches(layer, layer.weight, 1)[0] is None for layer in layers)
    if low_vram:
        at_zero.detach()
    else:
        at_zero.unpatch_model()


# How much a LoRA may add to the FP8 model's error against the unquantized model with the same LoRA: beside
# the FP8 weight the LoRA adds only its own rounding in the compute dtype (measured at most +0.004 on the
# tiny MMDiT); merged into it, one more FP8 rounding of the patched weight (+0.008 to +0.014). Merged with
# the layer's scale, a change that widens a channel clipped it (+0.048 DoRA, +0.055 rank 80).
ADAPTER_ERROR_GROWTH = {"beside": 0.01, "merged": 0.025}


@pytest.mark.parametrize("low_vram", [False, True])
@pytest.mark.parametrize("kind", adapters.BESIDE + adapters.MERGED)
def test_every_adapter_type_comfyui_loads_works_on_the_fp8_model(pack, models_dir, kind, low_vram):
    """Each adapter type through ComfyUI's LoRA loader, on every qkv and fc1: the FP8 model with it stays
    as close to the unquantized model with it as the bounds above, a low-rank one rides beside the FP8
    weight and any other is merged with a scale of its own, and removing it gives the model back."""
    import comfy.sd
    seed = int(torch.randint(0, 10**6, ()))
    write_checkpoint(models_dir / "checkpoints" / "base.safetensors", clip_l=False, vae=False, seed=seed)
    fp8, _, _ = load_checkpoint(pack, "base.safetensors", "fp8_default")
    unquantized, _, _ = load_checkpoint(pack, "base.safetensors", "off")
    adapter = adapters.adapter(kind, unquantized.model.diffusion_model.state_dict(), seed + 1)
    inputs = random_inputs()
    before, reference_before = mmdit_output(fp8, inputs), mmdit_output(unquantized, inputs)
    reference, _ = comfy.sd.load_lora_for_models(unquantized, None, adapter, 1.0, 0.0)
    reference.patch_model()
    expected = mmdit_output(reference, inputs)
    reference.unpatch_model()
    assert relative_error(expected, reference_before) > 0.05, "the adapter must change the model's output"

    patched, _ = comfy.sd.load_lora_for_models(fp8, None, adapter, 1.0, 0.0)
    way = "beside" if kind in adapters.BESIDE else "merged"
    if low_vram:
        patched.load(torch.device("cpu"), lowvram_model_memory=1)  # patches run per call
        out = mmdit_output(patched, inputs)
        patched.detach()
    else:
        patched.patch_model()
        out = mmdit_output(patched, inputs)
        # what the patched weights carry: every qkv and fc1 its LoRA, beside it or merged with a scale of its own
        carried = {"beside" if hasattr(m.weight, "sd35_low_rank") else "merged" if hasattr(m.weight, "sd35_weight_scale")
                   else "unpatched" for m in patched.model.diffusion_model.modules()
                   if getattr(m, "weight_scale", None) is not None}
        patched.unpatch_model()
        assert carried == {way, "unpatched"}, carried
    growth = relative_error(out, expected) - relative_error(before, reference_before)
    assert growth <= ADAPTER_ERROR_GROWTH[way], (kind, growth, f"checkpoint seed {seed}")
    assert torch.equal(mmdit_output(fp8, inputs), before)


def test_lora_applied_per_call_in_low_vram_mode(lora_on_fp8_layer):
    patched, layer, weight_before, expected = lora_on_fp8_layer
    stored_before = layer.weight.detach().clone()
    patched.load(torch.device("cpu"), lowvram_model_memory=1)  # nothing fits: patches run per call
    # 64 rows: the LoRA's effect on the output then stays near its effect on the weight, about 11%
    # (with 3 rows it fell to 4.7% in a CI run; in a simulation 0.1% of 3-row draws went below 5%)
    x = torch.randn(64, layer.weight.shape[1], dtype=layer.bias.dtype)
    out = layer_output(layer, x)
    bias = layer.bias.float()
    assert relative_error(out, x.float() @ expected.t() + bias) <= LORA_BOUND
    assert relative_error(out, x.float() @ weight_before.t() + bias) > 0.07
    patched.detach()
    assert torch.equal(layer.weight.view(torch.uint8), stored_before.view(torch.uint8))


def test_a_lora_beside_the_weight_is_not_applied_again_per_call(lora_on_fp8_layer, monkeypatch):
    """Once the side path is found, ComfyUI's cast no longer sees the patch: it would copy the weight
    for it on every call and, under 0.33's DynamicVRAM, widen and stochastically round every faulted
    weight (measured +57-97% s/step under an 8 GiB cap) for a weight the side path leaves as it is."""
    from sd35_fp8.nodes.comfy_versions import ScaledLowVramPatch
    patched, layer, weight_before, expected = lora_on_fp8_layer
    calls = []
    original_call = ScaledLowVramPatch.__call__
    monkeypatch.setattr(ScaledLowVramPatch, "__call__", lambda self, weight: calls.append(1) or original_call(self, weight))
    patched.load(torch.device("cpu"), lowvram_model_memory=1)
    x = torch.randn(3, layer.weight.shape[1], dtype=layer.bias.dtype)
    bias = layer.bias.float()
    outputs = [layer_output(layer, x) for _ in range(3)]
    assert len(calls) == 1
    for out in outputs:
        assert relative_error(out, x.float() @ expected.t() + bias) <= LORA_BOUND
    assert isinstance(layer.weight_function[0], ScaledLowVramPatch)  # handed back after each call
    patched.detach()


def test_a_lora_for_another_model_family_is_skipped_as_stock_skips_it(pack, models_dir, tmp_path, caplog):
    """An SDXL LoRA on our SD3.5 model: ComfyUI warns for each key it cannot place and the model
    computes exactly what it computed without it."""
    import folder_paths
    import nodes
    write_checkpoint(models_dir / "checkpoints" / "other_family.safetensors", clip_l=False, vae=False)
    model, _, _ = load_checkpoint(pack, "other_family.safetensors", "fp8_default")
    key = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    (tmp_path / "loras").mkdir()
    save_file({key + ".lora_up.weight": torch.randn(640, 4), key + ".lora_down.weight": torch.randn(4, 640)},
              str(tmp_path / "loras" / "sdxl_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"), is_default=True)
    inputs = random_inputs()
    before = mmdit_output(model, inputs)
    with caplog.at_level(logging.WARNING):
        patched, = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "sdxl_lora.safetensors", 1.0)
    assert f"lora key not loaded: {key}.lora_up.weight" in caplog.text
    patched.patch_model()
    assert torch.equal(mmdit_output(patched, inputs), before)
    patched.unpatch_model()


def test_a_new_patch_object_for_an_unchanged_lora_keeps_its_side_path(lora_on_fp8_layer):
    """0.33's DynamicVRAM makes new LowVramPatch objects at every load (every run): the side path
    found for the same patch entries is used again, not searched again (about 2.4 ms of GPU time a
    layer on an H200, 0.37 s a run for SD3.5 Large); entries at another strength are searched anew."""
    import comfy.model_patcher
    from devtools.factor_searches import counted_factor_searches
    patched, layer, weight_before, expected = lora_on_fp8_layer
    key = "diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
    x = torch.randn(3, layer.weight.shape[1], dtype=layer.bias.dtype)
    bias = layer.bias.float()
    outputs, searches = [], []
    half_strength = {key: [(0.5, *entry[1:]) for entry in patched.patches[key]]}
    for patches in (patched.patches, patched.patches, half_strength):
        patch = comfy.model_patcher.LowVramPatch(key, patches)
        layer.weight_lowvram_function = patch
        with counted_factor_searches() as count:
            outputs.append(layer_output(layer, x))
        searches.append(count[0])
        # from its second call the patch is hidden from ComfyUI's cast, and handed back after it
        assert torch.equal(layer_output(layer, x), outputs[-1])
        assert layer.weight_lowvram_function is patch
    layer.weight_lowvram_function = None
    assert searches == [1, 0, 1]
    assert torch.equal(outputs[0], outputs[1])
    assert relative_error(outputs[0], x.float() @ expected.t() + bias) <= LORA_BOUND
    half = (weight_before + expected) / 2
    assert relative_error(outputs[2], x.float() @ half.t() + bias) <= LORA_BOUND


def test_fp8_layers_archive_their_stored_dtype(pack, models_dir):
    """ComfyUI 0.33's DynamicVRAM stages every weight in VRAM in the dtype the model archived for it;
    archived before our fp8 weights load, it was the compute dtype, which widened them (unscaled)
    and sent a LoRA'd weight to the FP8 matmul in bf16 (a crash on the GPU)."""
    import comfy.model_management
    if not hasattr(comfy.model_management, "archive_model_dtypes"):
        pytest.skip("this ComfyUI archives no model dtypes (DynamicVRAM exists from 0.33)")
    write_diffusion_model(models_dir / "diffusion_models" / "tiny.safetensors")
    model = load_diffusion_model(pack, "tiny.safetensors")
    fp8_layers = [m for m in model.model.diffusion_model.modules() if getattr(m, "weight_scale", None) is not None]
    assert fp8_layers and {m.weight_comfy_model_dtype for m in fp8_layers} == {torch.float8_e4m3fn}


def test_lora_as_dynamic_vram_hands_it_over(lora_on_fp8_layer):
    """ComfyUI 0.33's DynamicVRAM puts a LoRA in weight_lowvram_function and, when it faults the weight
    in, calls it on the stored values widened to the compute dtype, then rounds the result back to
    fp8 (comfy/ops.py resolve_cast_module_with_vbar). That fault needs a GPU; here the patch object
    is handed over the same way and called as ComfyUI calls it."""
    import comfy.model_patcher
    patched, layer, weight_before, expected = lora_on_fp8_layer
    key = "diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
    layer.weight_lowvram_function = comfy.model_patcher.LowVramPatch(key, patched.patches)
    x = torch.randn(3, layer.weight.shape[1], dtype=layer.bias.dtype)
    out = layer_output(layer, x)
    bias = layer.bias.float()
    assert relative_error(out, x.float() @ expected.t() + bias) <= LORA_BOUND
    widened = layer.weight.to(torch.bfloat16)
    assert torch.equal(layer.weight_lowvram_function(widened), widened)  # the fp8 weight stays as it is
    layer.weight_lowvram_function = None
    assert relative_error(layer_output(layer, x), x.float() @ weight_before.t() + bias) <= LORA_BOUND


def test_comfyui_can_load_our_model_again_outside_dynamic_vram(lora_on_fp8_layer):
    """ComfyUI 0.33 asks the loader for a fresh copy of a model (ModelPatcher.cached_patcher_init) where it
    needs one outside DynamicVRAM: TorchCompileModel, conditioning hooks, a copy for another device. It
    raises for a loader that gives none. `clone(force_deepcopy=True)` takes the same path on any device."""
    patched, _, _, _ = lora_on_fp8_layer
    copy = built_again(patched)
    assert copy.model is not patched.model and type(copy).__name__ == "ModelPatcher"
    assert copy.model.sd35_fp8_origin.policy == patched.model.sd35_fp8_origin.policy
    inputs = random_inputs()
    outputs = []
    for model in (patched, copy):
        model.patch_model()
        outputs.append(mmdit_output(model, inputs))
        model.unpatch_model()
    assert torch.equal(*outputs), "the copy is the same FP8 model with the same LoRA"


def test_comfyui_can_load_our_vae_again(pack, models_dir):
    """The checkpoint's VAE says how to load it again too, as ComfyUI's VAE loader does (0.33's
    multi-GPU nodes copy a VAE through it; clone(force_deepcopy=True) takes that path)."""
    write_checkpoint(models_dir / "checkpoints" / "with_vae.safetensors")
    _, _, vae = load_checkpoint(pack, "with_vae.safetensors", "fp8_default")
    copy = built_again(vae.patcher)
    assert copy.model is not vae.patcher.model
    loaded, again = vae.patcher.model.state_dict(), copy.model.state_dict()
    assert loaded.keys() == again.keys() and all(torch.equal(again[k], v) for k, v in loaded.items())


def _load_with_attention(pack, models_dir, caplog, attention):
    write_diffusion_model(models_dir / "diffusion_models" / "att.safetensors", variant="medium")
    with caplog.at_level(logging.INFO):
        model, = pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"]().load("att.safetensors", "fp8_default",
                                                                               attention=attention)
    return model


@pytest.mark.parametrize("attention", ["fp8", "bf16"])
def test_the_attention_choice_is_reported_where_it_cannot_apply(pack, models_dir, caplog, attention):
    """FP8 attention needs a CUDA GPU with FP8 tensor cores (tests/gpu/test_cudnn_attention.py checks it
    is installed there): on the CPU either choice loads ComfyUI's attention, and the log says why fp8 did
    not take."""
    assert pack.NODE_CLASS_MAPPINGS["SD35FP8DiffusionModelLoader"].INPUT_TYPES()["optional"]["attention"][1][
        "default"] == "fp8"
    model = _load_with_attention(pack, models_dir, caplog, attention)
    assert "optimized_attention_override" not in model.model_options.get("transformer_options", {})
    assert "attention: ComfyUI's" in caplog.text
    assert ("FP8 attention needs a CUDA GPU" in caplog.text) == (attention == "fp8")


@pytest.mark.parametrize("attention", ["fp8", "bf16"])
def test_a_copy_built_again_keeps_the_attention_choice(pack, models_dir, caplog, attention):
    model = _load_with_attention(pack, models_dir, caplog, attention)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        built_again(model)
    assert "attention: ComfyUI's" in caplog.text
    assert ("FP8 attention needs a CUDA GPU" in caplog.text) == (attention == "fp8")
