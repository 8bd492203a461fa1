import torch

from devtools.tiny_sd3 import mmdit_state_dict
from sd35_fp8.quant.policy import POLICIES
from sd35_fp8.quant.quantize import quantize_state_dict
from sd35_fp8.quant.scales import FP8_DTYPE, dequantize_weight


def test_quantized_state_dict_and_report():
    source = mmdit_state_dict("medium", depth=2, prefix="", seed=int(torch.randint(0, 10**6, ())))
    ticks = []
    state_dict, report = quantize_state_dict(source.items(), POLICIES["fp8_default"],
                                             compute_dtype=torch.bfloat16, on_tensor=lambda: ticks.append(1))
    assert len(ticks) == len(source)
    quantized = {layer.name for layer in report.quantized_layers}
    assert "joint_blocks.0.x_block.attn2.qkv" in quantized and "final_layer.linear" not in quantized
    for name in quantized:
        weight, scale = state_dict[name + ".weight"], state_dict[name + ".weight_scale"]
        assert weight.dtype == FP8_DTYPE and scale.shape == (weight.shape[0], 1)
        original = source[name + ".weight"].double()
        error = (dequantize_weight(weight, scale).double() - original).norm() / original.norm()
        assert error <= 0.03
    for layer in report.kept_layers:
        assert state_dict[layer.name + ".weight"].dtype == torch.bfloat16
    assert state_dict["final_layer.linear.weight"].dtype == torch.bfloat16
    assert 0 < report.max_weight_rel_error <= 0.03
    # fp8 halves the bf16 bytes of each quantized linear, plus 4 bytes per output channel
    for layer in report.quantized_layers:
        assert layer.bytes_after == layer.bytes_before // 2 + 4 * layer.shape[0]
    saved = sum(layer.bytes_before - layer.bytes_after for layer in report.layers)
    assert report.bytes_before - report.bytes_after == saved > 0
    assert "linears in FP8" in report.summary("test model")


def test_policy_off_changes_nothing_but_dtype():
    source = mmdit_state_dict("large", depth=1, prefix="")
    state_dict, report = quantize_state_dict(source.items(), POLICIES["off"], compute_dtype=torch.float32)
    assert not report.quantized_layers and report.bytes_after == report.bytes_before
    assert all(torch.equal(state_dict[k], v.float()) for k, v in source.items())


def test_stored_fp8_is_taken_as_stored_or_dequantized_by_the_policy():
    from sd35_fp8.quant.quantized_weight import QuantizedWeight
    from sd35_fp8.quant.scales import quantize_weight
    source = mmdit_state_dict("large", depth=1, prefix="")
    stored = {k: QuantizedWeight(*quantize_weight(v, "per_tensor")) if k.endswith(".weight") and v.ndim == 2 else v
              for k, v in source.items()}
    state_dict, report = quantize_state_dict(stored.items(), POLICIES["fp8_keep_adaln"], compute_dtype=torch.float32)
    qkv, adaln = "joint_blocks.0.x_block.attn.qkv", "joint_blocks.0.x_block.adaLN_modulation.1"
    assert torch.equal(state_dict[qkv + ".weight"].view(torch.uint8), stored[qkv + ".weight"].weight.view(torch.uint8))
    assert state_dict[qkv + ".weight_scale"].shape == () and report.granularity == "per_tensor"
    assert torch.equal(state_dict[adaln + ".weight"], stored[adaln + ".weight"].dequantize(torch.float32))
    assert torch.equal(state_dict["final_layer.linear.weight"], stored["final_layer.linear.weight"].dequantize(torch.float32))
    layers = {layer.name: layer for layer in report.layers}
    assert layers[qkv].reason == "fp8 as stored in the file" and layers[qkv].weight_rel_error is None
    assert "dequantized from the file's fp8" in layers[adaln].reason
    assert report.stored_layers and "taken as stored in the file (no re-quantization)" in report.summary("m")
    assert "worst weight error" not in report.summary("m")
