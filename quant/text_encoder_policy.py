"""Which T5-XXL tensors are stored in FP8 when the SD3.5 text encoders load, as data.

Names are T5's own module names as a t5xxl file holds them (`encoder.block.3.layer.1.
DenseReluDense.wi_0`). CLIP-L and CLIP-G (0.8B parameters together) are never quantized.
"""
from .policy import QuantPolicy

_BLOCK = r"encoder\.block\.\d+\.layer\."

T5_KEEP_REASONS = (
    (r"^shared$", "token embeddings: a table lookup, no matmul, and every prompt token passes through it"),
    (r"relative_attention_bias$", "relative-position bias table: added to every attention score, tiny"),
    (r"", "not an attention or feed-forward linear"),
)

T5_FP8 = QuantPolicy(
    "t5_fp8",
    "FP8 for T5-XXL's attention (q, k, v, o) and gated feed-forward (wi_0, wi_1, wo) linears; token "
    "embeddings, layer norms and the relative-position bias stay in the text-encoder dtype",
    (_BLOCK + r"0\.SelfAttention\.(q|k|v|o)", _BLOCK + r"1\.DenseReluDense\.(wi_0|wi_1|wo)"),
    keep_reasons=T5_KEEP_REASONS)
