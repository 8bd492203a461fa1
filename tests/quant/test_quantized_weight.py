import pytest
import torch

from sd35_fp8.quant.quantized_weight import QuantizedWeight, concatenate, scale_fits
from sd35_fp8.quant.scales import FP8_DTYPE, quantize_weight
from tests.fixtures.quantized_files import same_bits


def random_weight(out_features=48, in_features=32):
    # rows of very different magnitudes, where one scale per tensor loses the most
    return torch.randn(out_features, in_features) * torch.logspace(-2, 0, out_features)[:, None]


@pytest.mark.parametrize("scale_shape", [(), (1,), (1, 1), (48,), (48, 1)])
def test_stored_scales_normalize_exactly(scale_shape):
    weight, _ = quantize_weight(random_weight())
    scale = torch.rand(scale_shape, dtype=torch.bfloat16) + 0.5
    stored = QuantizedWeight.from_stored(weight, scale)
    assert stored.scale.dtype == torch.float32
    assert stored.scale.shape == (() if scale.numel() == 1 else (48, 1))
    assert torch.equal(stored.scale.flatten(), scale.float().flatten())


@pytest.mark.parametrize("weight_shape,scale_shape,fits", [
    ((48, 32), (), True), ((48, 32), (48, 1), True), ((48, 32), (48,), True), ((8, 4, 2, 2), (8, 1, 1, 1), True),
    ((48, 32), (32, 1), False), ((48, 32), (1, 48), False), ((48, 32), (2,), False), ((48, 32), (48, 2), False)])
def test_scale_fits(weight_shape, scale_shape, fits):
    assert scale_fits(weight_shape, scale_shape) == fits


def test_per_channel_of_per_tensor_is_the_same_weight():
    tensorwise = QuantizedWeight(*quantize_weight(random_weight(), "per_tensor"))
    channelwise = tensorwise.per_channel()
    assert channelwise.scale.shape == (48, 1) and channelwise.granularity == "per_channel"
    assert same_bits(channelwise.weight, tensorwise.weight)
    assert torch.equal(channelwise.dequantize(torch.float32), tensorwise.dequantize(torch.float32))


def test_per_tensor_requantization_rounds_twice():
    source = random_weight(256, 256)
    channelwise = QuantizedWeight(*quantize_weight(source, "per_channel"))
    requantized = channelwise.per_tensor()
    direct = QuantizedWeight(*quantize_weight(source, "per_tensor"))
    assert requantized.scale.shape == () and requantized.weight.dtype == FP8_DTYPE
    assert torch.allclose(requantized.scale, direct.scale, rtol=1e-6)
    # The second rounding adds noise of its own, about as large as the first (measured 1.35-1.42x
    # the error of quantizing the original once): the cost of a per-tensor file made from an
    # already quantized model, stated in the save node's description. (fp8 keeps 3 mantissa bits
    # at any scale, so one scale per tensor alone costs little on rows like these.)
    assert direct.relative_error(source) < requantized.relative_error(source) < 1.5 * direct.relative_error(source)
    assert requantized.per_tensor() is requantized


def test_concatenate_keeps_each_part_exactly():
    parts = [QuantizedWeight(*quantize_weight(random_weight(16, 32), g)) for g in ("per_tensor", "per_channel", "per_tensor")]
    joined = concatenate(parts)
    assert joined.scale.shape == (48, 1)
    assert torch.equal(joined.dequantize(torch.float32), torch.cat([p.dequantize(torch.float32) for p in parts]))
    same_scale = [QuantizedWeight(p.weight, torch.tensor(0.5)) for p in parts]
    assert concatenate(same_scale).scale.shape == ()
