import torch

from devtools.tiny_text_encoders import NARROW_T5, t5_state_dict
from sd35_fp8.quant.quantize import quantize_state_dict
from sd35_fp8.quant.scales import FP8_DTYPE
from sd35_fp8.quant.text_encoder_policy import T5_FP8


def test_t5_linears_quantized_embeddings_norms_and_position_bias_kept():
    source = t5_state_dict({**NARROW_T5, "num_layers": 2, "vocab_size": 512}, seed=int(torch.randint(0, 10**6, ())))
    state_dict, report = quantize_state_dict(source.items(), T5_FP8, compute_dtype=torch.float16)
    quantized = {layer.name for layer in report.quantized_layers}
    assert quantized == {f"encoder.block.{i}.layer.{sub}.{name}" for i in range(2)
                         for sub, names in ((0, ("SelfAttention.q", "SelfAttention.k", "SelfAttention.v", "SelfAttention.o")),
                                            (1, ("DenseReluDense.wi_0", "DenseReluDense.wi_1", "DenseReluDense.wo")))
                         for name in names}
    for name in quantized:
        assert state_dict[name + ".weight"].dtype == FP8_DTYPE
        assert state_dict[name + ".weight_scale"].shape == (state_dict[name + ".weight"].shape[0], 1)
    kept = {layer.name: layer.reason for layer in report.kept_layers}
    assert "token embeddings" in kept["shared"]
    assert "position bias" in kept["encoder.block.0.layer.0.SelfAttention.relative_attention_bias"]
    for name in ("shared.weight", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 "encoder.block.1.layer.1.layer_norm.weight", "encoder.final_layer_norm.weight"):
        assert state_dict[name].dtype == torch.float16 and torch.equal(state_dict[name], source[name]), name
    assert 0 < report.max_weight_rel_error <= 0.03
