import pytest

from sd35_fp8.quant.policy import POLICIES

QUANTIZED_BY_DEFAULT = [
    "joint_blocks.0.x_block.attn.qkv", "joint_blocks.37.context_block.attn.qkv",
    "joint_blocks.3.x_block.attn.proj", "joint_blocks.12.x_block.attn2.qkv",
    "joint_blocks.12.x_block.attn2.proj", "joint_blocks.5.context_block.mlp.fc1",
    "joint_blocks.5.x_block.mlp.fc2", "joint_blocks.5.x_block.adaLN_modulation.1",
]
ALWAYS_KEPT = {
    "final_layer.linear": "final projection", "final_layer.adaLN_modulation.1": "final layer",
    "x_embedder.proj": "embedder", "t_embedder.mlp.0": "embedder", "y_embedder.mlp.2": "embedder",
    "context_embedder": "embedder", "joint_blocks.0.x_block.attn.ln_q": "not a joint-block linear",
}


@pytest.mark.parametrize("name", QUANTIZED_BY_DEFAULT)
def test_default_quantizes_every_joint_block_linear(name):
    assert POLICIES["fp8_default"].decide(name).quantize


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name,reason", ALWAYS_KEPT.items())
def test_final_layer_embedders_and_norms_always_kept(policy, name, reason):
    decision = POLICIES[policy].decide(name)
    assert not decision.quantize and reason in decision.reason


def test_keep_adaln_keeps_only_modulation():
    policy = POLICIES["fp8_keep_adaln"]
    assert not policy.decide("joint_blocks.5.x_block.adaLN_modulation.1").quantize
    assert "adaLN" in policy.decide("joint_blocks.5.x_block.adaLN_modulation.1").reason
    assert all(policy.decide(n).quantize for n in QUANTIZED_BY_DEFAULT if "adaLN" not in n)


def test_off_quantizes_nothing():
    assert not any(POLICIES["off"].decide(n).quantize for n in QUANTIZED_BY_DEFAULT)


@pytest.mark.parametrize("name", QUANTIZED_BY_DEFAULT)
def test_off_says_the_policy_keeps_each_joint_block_linear(name):
    assert "kept by this policy" in POLICIES["off"].decide(name).reason


def test_names_must_match_whole_module_names():
    assert not POLICIES["fp8_default"].decide("joint_blocks.0.x_block.attn.qkv.lora_up").quantize
    assert not POLICIES["fp8_default"].decide("extra.joint_blocks.0.x_block.attn.qkv").quantize
