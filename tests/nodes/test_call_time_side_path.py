"""What a layer keeps of a LoRA applied at call time (low VRAM, 0.33's DynamicVRAM), which under
DynamicVRAM's cap is VRAM its weights cannot be staged in:
- FP8 columns (quant/kernels/low_rank_columns.py) only where its calls join them into the GEMM: the context
  stream's few rows add the LoRA after it and never use them (about 80 MiB for a rank-16 LoRA on SD3.5
  Large's qkv and fc1);
- the side path only while the LoRA is applied: a layer called without it lets go, whoever still holds
  the LoRA's patch object.
The layer's calls are driven here as its forward drives them, minus the GEMM: the columns' own numerics are
tested in tests/quant/kernels and, joined into the GEMM on a GPU, tests/gpu."""
import gc
import weakref

import torch

from devtools.factor_searches import counted_factor_searches

KEY = "diffusion_model.joint_blocks.0.context_block.attn.qkv.weight"
IN_FEATURES, OUT_FEATURES, RANK = 256, 96, 4
FEW_ROWS, MANY_ROWS = 3, 512  # adds_after_gemm: at most in_features / 2 rows add the LoRA after the GEMM


def _layer_with_lora(triton_kernels):
    from devtools.fp8_layer import fp8_linear, lowvram_lora
    from sd35_fp8.quant.kernels.compute_path import FP8_ROWWISE, ComputePath
    weight = torch.randn(OUT_FEATURES, IN_FEATURES) * IN_FEATURES ** -0.5
    layer = fp8_linear(ComputePath(FP8_ROWWISE, "test", triton_kernels=triton_kernels), weight,
                       torch.zeros(OUT_FEATURES, dtype=torch.bfloat16))
    up, down = torch.randn(OUT_FEATURES, RANK), torch.randn(RANK, IN_FEATURES)
    up *= 0.05 * weight.norm() / (up @ down).norm()
    layer.weight_lowvram_function = lowvram_lora(KEY, up, down)
    return layer


def _call(layer, rows):
    """(the side path the call computes with, factor searches made): cast_stored_weight and call_patches, as
    FP8Linear's forward calls them."""
    from sd35_fp8.nodes.comfy_versions import call_patches, cast_stored_weight
    x = torch.randn(rows, IN_FEATURES, dtype=torch.bfloat16)
    with counted_factor_searches() as searches:
        weight, _, _ = cast_stored_weight(layer, x)
        low_rank, _ = call_patches(layer, weight, rows)
    return low_rank, searches[0]


def test_columns_are_made_for_the_first_call_that_joins_them_and_kept_for_the_lora(pack):
    import comfy.model_patcher
    layer = _layer_with_lora(triton_kernels=True)
    few, searches = _call(layer, FEW_ROWS)
    assert searches == 1 and few is not None and few.columns is None
    many, searches = _call(layer, MANY_ROWS)
    # rank 4 needs about 16 columns; zero columns fill K to 320, a multiple of 64 (test_low_rank.py)
    assert searches == 0 and many.columns is not None and many.columns.up_fp8.shape == (OUT_FEATURES, 64)
    assert many.up is few.up and many.down is few.down
    again, searches = _call(layer, FEW_ROWS)
    assert searches == 0 and again is many
    # 0.33's DynamicVRAM makes a new patch object at every run: the same LoRA keeps the side path it has
    patch = layer.weight_lowvram_function
    layer.weight_lowvram_function = comfy.model_patcher.LowVramPatch(KEY, patch.patches)
    next_run, searches = _call(layer, MANY_ROWS)
    assert searches == 0 and next_run is many


def test_a_layer_that_never_joins_columns_never_makes_them(pack):
    """The weight-only and Triton-less paths compute a LoRA beside the weight without columns, at any rows."""
    layer = _layer_with_lora(triton_kernels=False)
    for rows in (FEW_ROWS, MANY_ROWS):
        low_rank, _ = _call(layer, rows)
        assert low_rank is not None and low_rank.columns is None


def test_a_layer_called_without_its_lora_lets_go_of_the_side_path(pack):
    import comfy.model_patcher
    layer = _layer_with_lora(triton_kernels=True)
    # 0.33's DynamicVRAM keeps the patch objects of a run in its pinned-memory registry after it
    patch = layer.weight_lowvram_function
    low_rank, searches = _call(layer, MANY_ROWS)
    assert searches == 1 and low_rank.columns is not None
    kept = [weakref.ref(t) for t in (low_rank.up, low_rank.down, *low_rank.columns)]
    del low_rank
    # and loads a model whose LoRA was removed with no patch on the layer
    layer.weight_lowvram_function = None
    unpatched, searches = _call(layer, MANY_ROWS)
    gc.collect()
    assert unpatched is None and searches == 0
    assert all(ref() is None for ref in kept)
    # the same LoRA applied again is searched again
    layer.weight_lowvram_function = comfy.model_patcher.LowVramPatch(KEY, patch.patches)
    again, searches = _call(layer, MANY_ROWS)
    assert searches == 1 and again is not None
