"""Which MMDiT layers are stored in FP8 and which stay in the compute dtype, as data.

Names are the diffusion model's own module names (`joint_blocks.3.x_block.attn.qkv`), without
the checkpoint's `model.diffusion_model.` prefix. Only 2-D Linear weights can be quantized;
everything else (norms, convolutions, the pos_embed buffer, biases) always stays.
"""
import re
from dataclasses import dataclass

JOINT_BLOCK_LINEAR = r"joint_blocks\.\d+\.(context_block|x_block)\."

# Why each kept group stays high precision, for the per-layer report.
KEEP_REASONS = (
    (r"final_layer\.linear$", "final projection: its error goes straight into the prediction"),
    (r"final_layer\.", "final layer modulation"),
    (r"(x_embedder|t_embedder|y_embedder|context_embedder)(\.|$)", "embedder"),
    (r"\.adaLN_modulation\.", "adaLN modulation kept by this policy"),
    (JOINT_BLOCK_LINEAR + r"((attn|attn2)\.(qkv|proj)|mlp\.(fc1|fc2))$", "attention or MLP linear kept by this policy"),
    (r"", "not a joint-block linear"),
)


@dataclass(frozen=True)
class LayerDecision:
    name: str
    quantize: bool
    reason: str


@dataclass(frozen=True)
class QuantPolicy:
    name: str
    description: str
    quantized_layers: tuple  # regexes, full match against the module name
    keep_reasons: tuple = KEEP_REASONS  # (regex searched in the name, reason); the last must match all

    def decide(self, module_name: str) -> LayerDecision:
        if any(re.fullmatch(p, module_name) for p in self.quantized_layers):
            return LayerDecision(module_name, True, "fp8 per this policy")
        reason = next(r for p, r in self.keep_reasons if re.search(p, module_name))
        return LayerDecision(module_name, False, reason)


_ATTENTION_AND_MLP = (JOINT_BLOCK_LINEAR + r"(attn|attn2)\.(qkv|proj)",
                      JOINT_BLOCK_LINEAR + r"mlp\.(fc1|fc2)")

POLICIES = {
    "fp8_default": QuantPolicy(
        "fp8_default",
        "FP8 for every joint-block linear (attention, MLP, adaLN modulation); final layer, "
        "embedders and norms in the compute dtype",
        _ATTENTION_AND_MLP + (JOINT_BLOCK_LINEAR + r"adaLN_modulation\.1",)),
    "fp8_keep_adaln": QuantPolicy(
        "fp8_keep_adaln",
        "as fp8_default, but adaLN modulation also stays in the compute dtype (better accuracy, "
        "about 2.5 GB more for SD3.5 Large)",
        _ATTENTION_AND_MLP),
    "off": QuantPolicy("off", "no quantization: the whole model in the compute dtype", ()),
}
DEFAULT_POLICY = "fp8_default"
