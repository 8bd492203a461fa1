"""The stored weight handed to an FP8 linear's matmul: as it is where ComfyUI's cast would hand it back
unchanged (saving that cast's host time on every eager call), through ComfyUI's cast wherever that cast
has work to do (a per-call patch, weights elsewhere, DynamicVRAM's staging)."""
import pytest
import torch


@pytest.fixture
def layer(pack):
    from devtools.fp8_layer import fp8_linear
    from sd35_fp8.quant.kernels.compute_path import WEIGHT_ONLY, ComputePath
    return fp8_linear(ComputePath(WEIGHT_ONLY, "test"), torch.randn(48, 32), torch.randn(48).bfloat16())


@pytest.fixture
def comfyui_casts(monkeypatch):
    """The layers ComfyUI's cast is called for, while it still does its work."""
    from sd35_fp8.nodes import comfy_versions
    casts = []
    comfyui_cast = comfy_versions.cast_bias_weight
    monkeypatch.setattr(comfy_versions, "cast_bias_weight", lambda layer, *args, **kwargs: casts.append(layer)
                        or comfyui_cast(layer, *args, **kwargs))
    return casts


def test_a_resident_layer_gets_what_comfyuis_cast_would_give_without_it(layer, comfyui_casts):
    from comfy.ops import cast_bias_weight
    from sd35_fp8.nodes.comfy_versions import cast_stored_weight
    x = torch.randn(5, 32, dtype=torch.float16)  # a bias stored in bf16 comes back in the input's dtype
    weight, bias, offload = cast_stored_weight(layer, x)
    assert not comfyui_casts
    comfy_weight, comfy_bias, _ = cast_bias_weight(layer, x, dtype=layer.weight.dtype, bias_dtype=x.dtype,
                                                   offloadable=True)
    assert weight is layer.weight and comfy_weight is layer.weight
    assert bias.dtype == comfy_bias.dtype == torch.float16 and torch.equal(bias, comfy_bias)
    assert offload is None


def test_comfyuis_cast_runs_where_it_has_work(layer, comfyui_casts):
    from sd35_fp8.nodes.comfy_versions import cast_stored_weight
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    handed = []
    layer.weight_function = [lambda weight: handed.append(weight.dtype) or weight]
    cast_stored_weight(layer, x)
    # a weight adapter (LoRA training's) takes the dequantized weight, after the cast (nodes/ops.py)
    assert comfyui_casts == [layer] and handed == []
    layer(x)
    assert handed == [torch.bfloat16]
    layer.weight_function = []
    layer.bias_function = [lambda bias: bias * 2]
    _, bias, _ = cast_stored_weight(layer, x)
    assert comfyui_casts == [layer] * 3 and torch.equal(bias, layer.bias * 2)
    layer.bias_function = []
    layer._v = (None, 0, 0)  # what 0.33's DynamicVRAM sets on a layer it stages (its vbar allocation)
    weight, _, _ = cast_stored_weight(layer, x)
    assert comfyui_casts == [layer] * 4 and torch.equal(weight.view(torch.uint8), layer.weight.view(torch.uint8))
